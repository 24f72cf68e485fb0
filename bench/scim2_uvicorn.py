"""scim2-server's ASGI application under uvicorn (HTTP/1.1, keep-alive), with
one isolated in-memory store per URL prefix: http://HOST:PORT/<tenant>/v2.

`uvicorn --factory scim2_uvicorn:app --app-dir bench`. Used by
bench/third_party.py; no authentication (every request is accepted).
"""

from scim2_server.applications.asgi import ASGIApplication
from scim2_server.memory import AsyncInMemoryStorage
from scim2_server.utils import load_default_provider


def app():
    provider = load_default_provider()
    tenants = {}

    async def dispatch(scope, receive, send):
        if scope["type"] != "http":
            # lifespan: nothing to set up
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    if message["type"] == "lifespan.startup":
                        await send({"type": "lifespan.startup.complete"})
                    elif message["type"] == "lifespan.shutdown":
                        await send({"type": "lifespan.shutdown.complete"})
                        return
            return
        tenant, _, _ = scope["path"].lstrip("/").partition("/")
        application = tenants.get(tenant)
        if application is None:
            application = ASGIApplication(AsyncInMemoryStorage(), provider)
            tenants[tenant] = application
        scope = dict(scope)
        scope["root_path"] = scope.get("root_path", "") + "/" + tenant
        await application(scope, receive, send)

    return dispatch
