"""The Python examples of the README and docs/python.md, run as written.

The blocks of one file run in order in one namespace (a later block uses the
``client`` of an earlier one), against a store folder of the test's own. The
names an example leaves to the reader are given small stand-ins: ``deploy``
and ``process`` record what they were given, ``work`` is two chunks, and
``seen_fence`` is the fence of a lock another owner holds.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

import locksmith

REPO = Path(__file__).resolve().parents[2]


def python_blocks(name: str) -> List[str]:
    text = (REPO / name).read_text()
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


class _Done:
    """What ``deploy`` returns: awaitable, and harmless when not awaited."""

    def __await__(self):  # type: ignore[no-untyped-def]
        return iter(())


def run_blocks(name: str) -> Dict[str, Any]:
    blocks = python_blocks(name)
    assert blocks, f"{name} has Python examples"
    calls: List[Any] = []

    def deploy(*args: Any, **kwargs: Any) -> _Done:
        calls.append(("deploy", args, kwargs))
        return _Done()

    def process(chunk: Any, **kwargs: Any) -> None:
        calls.append(("process", chunk, kwargs))

    ns: Dict[str, Any] = {
        "deploy": deploy,
        "process": process,
        "work": [b"one", b"two"],
        "calls": calls,
    }
    for n, code in enumerate(blocks):
        if "seen_fence" in code:
            other = locksmith.Client().acquire("repo/acme", ttl=60, owner="agent-9")
            ns["seen_fence"] = other.fence
        compiled = compile(
            code, f"{name}, Python example {n + 1}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        )
        if compiled.co_flags & inspect.CO_COROUTINE:
            asyncio.run(eval(compiled, ns))
        else:
            exec(compiled, ns)
    return ns


def test_the_readme_python_example_runs_as_written(home: Path) -> None:
    ns = run_blocks("README.md")
    fences = [c[2]["fence"] for c in ns["calls"] if c[0] == "deploy"]
    assert len(fences) == 1 and fences[0] > 0, ns["calls"]
    # Released at the end of the block.
    assert ns["client"].status("repo/acme")["holders"] == []


def test_the_python_docs_examples_run_as_written(home: Path) -> None:
    ns = run_blocks("docs/python.md")
    kinds = [c[0] for c in ns["calls"]]
    # The first example and the asyncio one deploy; the chunks are processed.
    assert kinds.count("deploy") == 2 and kinds.count("process") == 2, kinds
    # The last example forced the lock the other owner held.
    client = ns["client"]
    assert client.status("repo/acme")["holders"] == []
    forced = client.history(prefix="repo/", limit=1)[0]
    assert forced["reason"] == "forced" or forced.get("kind") == "forced", forced


def test_a_failing_python_example_fails(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The runner itself: an example that raises is not passed over.
    monkeypatch.setattr(
        sys.modules[__name__], "python_blocks", lambda name: ["raise RuntimeError('no')\n"]
    )
    with pytest.raises(RuntimeError):
        run_blocks("README.md")
