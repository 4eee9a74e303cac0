"""The OrbNET notifications API document's Python client, as the document writes it (the
`websockets` library, token in the query string), run against a real `switchboard serve`. Prints one JSON line per event received
and exits after the first device_status. Usage: orbnet_notifications.py WS_URL TOKEN"""

import asyncio
import json
import sys

import websockets


async def main(url, token):
    uri = f"{url}?token={token}"
    async with websockets.connect(uri) as websocket:
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


asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2]), 30))
