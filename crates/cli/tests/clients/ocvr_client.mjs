// The OCVR WebSocket document's JavaScript client (seed 001, "Example: JavaScript Client"), as
// the document writes it, run in Node against a real `switchboard serve`. What differs from the
// document: the base URL and the token come from the command line (the document uses a page's
// origin and `wss://api.ocvr.net`), the heartbeat period can be shortened for the test
// (HEARTBEAT_MS), the client subscribes to one channel on open ("subscribe to channels as
// needed"), and every message is printed as one JSON line so the test can read it.
//
// Usage: node ocvr_client.mjs HTTP_BASE WS_BASE TOKEN CHANNEL
const [base, wsBase, token, channel] = process.argv.slice(2);
const WebSocketImpl = globalThis.WebSocket ?? (await import("ws")).WebSocket;
const heartbeatMs = Number(process.env.HEARTBEAT_MS ?? 30000);
const print = (line) => process.stdout.write(JSON.stringify(line) + "\n");
const handleNewMessage = (data) => print({ got: "message_create", data });
const handlePresenceUpdate = (data) => print({ got: "presence_update", data });

async function connectWebSocket() {
  // Get ticket
  const res = await fetch(`${base}/v1/auth/ws-ticket`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}` },
  });
  const { data } = await res.json();

  // Connect
  const ws = new WebSocketImpl(`${wsBase}/v1/ws?ticket=${data.ticket}`);
  let heartbeat;

  ws.onopen = () => {
    print({ got: "open" });
    // Start heartbeat
    heartbeat = setInterval(() => {
      ws.send(JSON.stringify({ type: "heartbeat" }));
    }, heartbeatMs);
    ws.send(JSON.stringify({ type: "subscribe", data: { channel_id: channel } }));
  };

  ws.onmessage = (event) => {
    const msg = JSON.parse(event.data);
    switch (msg.type) {
      case "message_create":
        handleNewMessage(msg.data);
        break;
      case "presence_update":
        handlePresenceUpdate(msg.data);
        break;
      // ... handle other events
      default:
        print({ got: msg.type, data: msg.data });
    }
  };

  ws.onclose = () => {
    clearInterval(heartbeat);
    print({ got: "closed" });
    setTimeout(connectWebSocket, 1000);
  };
}

connectWebSocket();
