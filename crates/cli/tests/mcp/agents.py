"""Agents driving `locksmith mcp` through the official MCP Python SDK.

Run by the Rust tests (crates/cli/tests/mcp/mod.rs) as
`python3 agents.py SCENARIO`, with LOCKSMITH_BIN (the binary),
LOCKSMITH_HOME (a store folder of the test's own) and, for a server,
LOCKSMITH_SERVER. Each scenario asserts what an agent would see and exits
non-zero on the first surprise.
"""

import asyncio
import contextlib
import json
import os
import signal
import sys
import time

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import Implementation

TOOLS = {"acquire", "release", "renew", "status", "list", "history"}


def params(*extra):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LOCKSMITH_HOME": os.environ["LOCKSMITH_HOME"],
    }
    for name in ["LOCKSMITH_SERVER", "LOCKSMITH_TOKEN"]:
        if os.environ.get(name):
            env[name] = os.environ[name]
    args = ["mcp", "--call-wait", "1s", "--keep-place", "3s", *extra]
    return StdioServerParameters(command=os.environ["LOCKSMITH_BIN"], args=args, env=env)


class Agent:
    """One agent session: its own `locksmith mcp` process."""

    def __init__(self, session, name):
        self.s = session
        self.name = name

    async def call(self, tool, **args):
        r = await self.s.call_tool(tool, args)
        data = r.structured_content
        text = r.content[0].text if r.content else ""
        assert data is not None, f"{tool}: no structured content: {text}"
        return r.is_error, data, text

    async def ok(self, tool, **args):
        err, data, text = await self.call(tool, **args)
        assert not err, f"{self.name} {tool} {args}: unexpected error: {text}"
        return data, text

    async def fails(self, tool, code, **args):
        err, data, text = await self.call(tool, **args)
        assert err, f"{self.name} {tool} {args}: expected {code}, got success: {text}"
        assert data["error"] == code, f"{self.name} {tool}: expected {code}: {text}"
        return data, text


@contextlib.asynccontextmanager
async def agent(stack_name, *extra):
    async with stdio_client(params(*extra)) as (r, w):
        info = Implementation(name=stack_name, version="1.0")
        async with ClientSession(r, w, client_info=info) as s:
            await s.initialize()
            yield Agent(s, stack_name)


def holder_pid(status):
    return status["status"]["holders"][0]["pid"]


async def handshake():
    async with agent("agent-a") as a:
        tools = (await a.s.list_tools()).tools
        assert {t.name for t in tools} == TOOLS, [t.name for t in tools]
        for t in tools:
            assert len(t.description or "") > 80, f"{t.name}: description too short"
            assert t.input_schema.get("type") == "object", t.input_schema
        acquire = next(t for t in tools if t.name == "acquire")
        props = acquire.input_schema["properties"]
        for field in ["keys", "ttl", "wait", "shared", "limit", "tree", "task",
                      "metadata", "strategy", "request_id"]:
            assert field in props, f"acquire lacks {field}"
        assert acquire.input_schema["required"] == ["keys"]
        resources = (await a.s.list_resources()).resources
        assert [str(r.uri) for r in resources] == ["locksmith://locks"], resources
        templates = (await a.s.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["locksmith://locks/{key}"]

        data, _ = await a.ok("acquire", keys=["repo/acme"], task="42")
        assert data["status"] == "granted" and data["owner"].startswith("agent-a#"), data
        board = json.loads((await a.s.read_resource("locksmith://locks")).contents[0].text)
        assert [l["key"] for l in board["locks"]] == ["repo/acme"], board
        one = json.loads((await a.s.read_resource("locksmith://locks/repo/acme")).contents[0].text)
        assert one["holders"][0]["task"] == "42", one
        # Bad input: the core's message, as a tool error.
        data, text = await a.fails("acquire", "invalid", keys=["repo//acme"])
        assert "empty" in data["message"], text
        data, text = await a.fails("acquire", "invalid", keys=["x"], wait="soon")
        assert "wait" in data["message"], text
    print("handshake ok")


async def busy():
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(agent("agent-a"))
        b = await stack.enter_async_context(agent("agent-b"))
        got, _ = await a.ok("acquire", keys=["repo/acme"], task="42")
        data, text = await b.fails("acquire", "busy", keys=["repo/acme"])
        assert got["owner"] in text and "task 42" in text and "lease" in text, text
        assert data["holders"][0]["owner"] == got["owner"], data
        # B cannot release A's lock, and the lock is untouched.
        data, text = await b.fails("release", "not_holder", keys=["repo/acme"])
        assert got["owner"] in text, text
        st, _ = await b.ok("status", key="repo/acme")
        assert st["status"]["holders"][0]["fence"] == got["locks"][0]["fence"], st
        rel, text = await a.ok("release", keys=["repo/acme"])
        assert rel["keys"][0]["status"] == "released", rel
        # Releasing twice is not an error.
        again, text = await a.ok("release", keys=["repo/acme"])
        assert again["keys"][0]["status"] == "free", again
        mine, _ = await b.ok("acquire", keys=["repo/acme"])
        assert mine["locks"][0]["fence"] > got["locks"][0]["fence"], mine
        await b.ok("release", keys=["repo/acme"], reason="failed")
        hist, text = await b.ok("history", key="repo/acme")
        reasons = [e["reason"] for e in hist["events"] if e["reason"]]
        assert reasons == ["failed", "completed"], (reasons, text)
    print("busy ok")


async def queue():
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(agent("agent-a"))
        b = await stack.enter_async_context(agent("agent-b"))
        c = await stack.enter_async_context(agent("agent-c"))
        await a.ok("acquire", keys=["task/7"])
        first, text = await b.ok("acquire", keys=["task/7"], wait="forever", request_id="b-1")
        assert first["status"] == "waiting" and first["position"] == 1, text
        assert "b-1" in text, text
        second, _ = await c.ok("acquire", keys=["task/7"], wait="forever", request_id="c-1")
        assert second["status"] == "waiting" and second["position"] == 2, second
        # B comes back across two more calls: still first in line.
        for _ in range(2):
            again, _ = await b.ok("acquire", keys=["task/7"], wait="forever", request_id="b-1")
            assert again["status"] == "waiting" and again["position"] == 1, again
        # Another request on the same id is refused, the place untouched.
        await b.fails("acquire", "invalid", keys=["task/8"], wait="forever", request_id="b-1")
        await a.ok("release", keys=["task/7"])
        got, text = await b.ok("acquire", keys=["task/7"], wait="forever", request_id="b-1")
        assert got["status"] == "granted" and got["waited_s"] > 1.0, text
        # Asking again with the same id answers the same grant.
        same, _ = await b.ok("acquire", keys=["task/7"], wait="forever", request_id="b-1")
        assert same["grant"] == got["grant"], (same, got)
        behind, _ = await c.ok("acquire", keys=["task/7"], wait="forever", request_id="c-1")
        assert behind["status"] == "waiting" and behind["position"] == 1, behind
        # C does not come back within keep-place (3s): its place is given up.
        await asyncio.sleep(4.5)
        data, text = await c.fails("acquire", "cancelled", keys=["task/7"], wait="forever",
                                   request_id="c-1")
        ws, _ = await b.ok("list", waiting=True)
        assert ws["waiting"] == [], ws
        # A bounded wait that runs out.
        data, text = await c.fails("acquire", "wait_timed_out", keys=["task/7"], wait="500ms",
                                   request_id="c-2")
        assert data["holders"][0]["owner"] == got["owner"], text
        # After a release the same request id asks anew, never answers the
        # ended grant.
        await b.ok("release", keys=["task/7"])
        fresh, text = await b.ok("acquire", keys=["task/7"], request_id="b-1")
        assert fresh["status"] == "granted" and fresh["grant"] != got["grant"], text
        # A grant that comes while C is away and never collected is released
        # again once its place would have lapsed.
        away, _ = await c.ok("acquire", keys=["task/7"], wait="forever", request_id="c-3")
        assert away["status"] == "waiting", away
        await b.ok("release", keys=["task/7"])
        await asyncio.sleep(5)
        st, text = await b.ok("status", key="task/7")
        assert st["status"]["free"], text
        hist, _ = await b.ok("history", key="task/7", limit=2)
        last = hist["events"][0]
        assert last["owner"].startswith("agent-c#") and last["reason"] == "completed", hist
        hist, _ = await b.ok("history", key="task/7")
        kinds = [e["kind"] for e in hist["events"]]
        assert "wait_cancelled" in kinds and "wait_timed_out" in kinds, kinds
    print("queue ok")


async def deadlock():
    """A wait that would close a cycle is refused at once, naming it."""
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(agent("agent-a"))
        b = await stack.enter_async_context(agent("agent-b"))
        await a.ok("acquire", keys=["repo/x"])
        await b.ok("acquire", keys=["repo/y"])
        first, _ = await a.ok("acquire", keys=["repo/y"], wait="forever", request_id="a")
        assert first["status"] == "waiting", first
        data, text = await b.fails("acquire", "deadlock", keys=["repo/x"], wait="forever")
        assert "agent-a#" in text and "agent-b#" in text, text
        # B's lock is untouched and A still waits.
        st, _ = await a.ok("status", key="repo/y")
        assert st["status"]["holders"][0]["owner"].startswith("agent-b#"), st
        again, _ = await a.ok("acquire", keys=["repo/y"], wait="forever", request_id="a")
        assert again["status"] == "waiting", again
    print("deadlock ok")


async def killed():
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(agent("agent-a"))
        b = await stack.enter_async_context(agent("agent-b"))
        got, _ = await a.ok("acquire", keys=["repo/acme"], task="9")
        st, _ = await b.ok("status", key="repo/acme")
        pid = holder_pid(st)
        assert pid != os.getpid(), pid
        # B waits in the queue, C will try once the holder is dead.
        c = await stack.enter_async_context(agent("agent-c"))
        waiting, _ = await b.ok("acquire", keys=["repo/acme"], wait="30s", request_id="b")
        assert waiting["status"] == "waiting", waiting
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            # A zombie until the SDK reaps it. The leader turns zombie
            # first; its other threads may still be exiting (a write in
            # flight on a busy disk) and the open files, with the kernel
            # lock that proves it alive, go with the last of them. Dead
            # means: a zombie with no thread left but itself.
            try:
                with open(f"/proc/{pid}/stat") as f:
                    zombie = f.read().split(") ")[1].startswith("Z")
                threads = os.listdir(f"/proc/{pid}/task")
            except FileNotFoundError:
                break
            if zombie and threads == [str(pid)]:
                break
            assert time.monotonic() < deadline, "the killed process did not die"
            await asyncio.sleep(0.01)
        # At once: the waiter's next call (at most --call-wait, 1s) is
        # granted, long before the 60s lease could run out.
        mine, text = await b.ok("acquire", keys=["repo/acme"], wait="30s", request_id="b")
        assert mine["status"] == "granted", text
        assert mine["locks"][0]["fence"] > got["locks"][0]["fence"], text
        assert mine["waited_s"] < 10, text
        await c.fails("acquire", "busy", keys=["repo/acme"])
        hist, _ = await b.ok("history", key="repo/acme")
        ended = [e for e in hist["events"] if e["reason"]]
        assert ended[0]["reason"] == "dead_process" and ended[0]["owner"] == got["owner"], ended
    print("killed ok")


async def session_end():
    async with agent("agent-a") as a:
        await a.ok("acquire", keys=["repo/one"])
        await a.ok("acquire", keys=["repo/two"], outlive_session=True, ttl="10m")
        listed, text = await a.ok("list", mine=True)
        assert sorted(l["key"] for l in listed["locks"]) == ["repo/one", "repo/two"], text
    # The session ended without releasing: its own lock ended as exited, the
    # lock that outlives it stays.
    async with agent("agent-b") as b:
        st, _ = await b.ok("status", key="repo/one")
        assert st["status"]["free"], st
        hist, _ = await b.ok("history", key="repo/one")
        assert hist["events"][0]["reason"] == "exited", hist
        st, _ = await b.ok("status", key="repo/two")
        assert not st["status"]["free"], st
    print("session_end ok")


async def lost():
    """A lock forced away by an admin is told to the agent on its next call."""
    async with agent("agent-a") as a:
        await a.ok("acquire", keys=["repo/acme"])
        proc = await asyncio.create_subprocess_exec(
            os.environ["LOCKSMITH_BIN"], "force-release", "repo/acme", "--reason", "test",
            env={**os.environ}, stdout=asyncio.subprocess.DEVNULL)
        assert await proc.wait() == 0
        data, text = await a.fails("renew", "lost")
        assert data["lost"][0]["reason"] == "forced", text
    print("lost ok")


async def remote_killed():
    """On a server the lease ends a killed session's locks."""
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(agent("agent-a", "--ttl", "2s"))
        b = await stack.enter_async_context(agent("agent-b"))
        got, _ = await a.ok("acquire", keys=["repo/acme"])
        assert got["ttl_s"] == 2.0, got
        st, _ = await b.ok("status", key="repo/acme")
        # Renewed while the session lives: still held after two leases.
        await asyncio.sleep(4)
        await b.fails("acquire", "busy", keys=["repo/acme"])
        os.kill(holder_pid(st), signal.SIGKILL)
        for _ in range(10):
            mine, text = await b.ok("acquire", keys=["repo/acme"], wait="10s", request_id="b")
            if mine["status"] == "granted":
                break
        assert mine["status"] == "granted", text
        hist, _ = await b.ok("history", key="repo/acme")
        ended = [e for e in hist["events"] if e["reason"]]
        assert ended[0]["reason"] == "lease_expired", ended
    print("remote_killed ok")


async def forbidden():
    """A server token that may only read: every write is a tool error."""
    async with agent("agent-v") as v:
        data, text = await v.fails("acquire", "forbidden", keys=["repo/acme"])
        assert "viewer" in text, text
        listed, _ = await v.ok("list")
        assert listed["locks"] == [], listed
    print("forbidden ok")


SCENARIOS = {f.__name__: f for f in [handshake, busy, queue, deadlock, killed, session_end,
                                      lost, remote_killed, forbidden]}

if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(SCENARIOS[sys.argv[1]](), timeout=60))
