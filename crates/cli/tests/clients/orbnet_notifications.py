"""The OrbNET notifications API document's Python client, as the document writes it (the
`websockets` library, token in the query string), run against a real `switchboard serve`. Prints one JSON line per event received
and exits after the first device_status. Usage: orbnet_notifications.py WS_URL TOKEN [CA_FILE]
(a wss:// URL to a node whose certificate CA_FILE holds, e.g. a self-signed one)"""

import asyncio
import json
import ssl
import sys

import websockets


async def main(url, token, ca_file=None):
    uri = f"{url}?token={token}"
    tls = {"ssl": ssl.create_default_context(cafile=ca_file)} if ca_file else {}
    async with websockets.connect(uri, **tls) as websocket:
        await websocket.send(json.dumps({"type": "subscribe", "channels": ["notification", "device_status"]}))
        async for raw_message in websocket:
            event = json.loads(raw_message)
            if event["type"] == "connection_ack":
                print(json.dumps({"session": event["sessionId"]}), flush=True)
            elif event["type"] == "notification":
                payload = event["payload"]
                print(json.dumps({"id": event["id"], "title": payload["title"], "message": payload["message"]}), flush=True)
            elif event["type"] == "device_status":
                payload = event["payload"]
                print(json.dumps({"id": event["id"], "device": payload["deviceId"], "status": payload["status"]}), flush=True)
                return


asyncio.run(asyncio.wait_for(main(*sys.argv[1:4]), 30))
