"""`%%letta` and `%letta`: the notebook's front door. Parsing and display only.

Sending, resuming, cursors and approvals live in the session and follower; this module turns a
cell into `Session.send(...)`, shows the `RunView` (or, with `--wait`, a deterministic text
transcript) and reports every `LettaNbError` as one red line, never a traceback.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import math
import os
import sys
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import arg_split, argument, magic_arguments
from IPython.display import display
from traitlets import Bool, CaselessStrEnum, Float, Int, Unicode

from . import _kernel
from .core.cursor import cell_key
from .core.errors import ConfigurationError, LettaNbError
from .core.status import SETTLED, ChainStatus

COMMANDS = (
    "connect",
    "agents",
    "agent",
    "conversations",
    "runs",
    "attach",
    "cancel",
    "chunks",
    "status",
    "dashboard",
)
#: Which subcommands accept each of the line magic's options.
_OPTIONS = {
    "api_key_env": ("connect",),
    "conversation": ("connect", "runs"),
    "active": ("runs",),
    "agent": ("runs", "conversations"),
    "limit": ("runs", "conversations"),
    "from_seq": ("attach",),
    "stall": ("dashboard",),
}
_ARITY = {
    "connect": (0, 1),
    "agents": (0, 0),
    "agent": (1, 1),
    "conversations": (0, 0),
    "runs": (0, 0),
    "attach": (1, 1),
    "cancel": (0, 1),
    "chunks": (1, 1),
    "status": (0, 0),
    "dashboard": (0, 0),
}


def _fail(err: LettaNbError | str) -> None:
    """One red line on stderr (Jupyter shows stderr in red), no traceback."""
    print(f"letta: {err}", file=sys.stderr)


# ---- argument parsing: every mistake is one usage line ---------------------------------------
def _seconds(text: str) -> float:
    """`--timeout`: a positive, finite number of seconds (`inf`, `nan`, `-1`, `abc` are not)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"wants a number of seconds, not {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"wants a positive, finite number of seconds, not {text!r}"
        )
    return value


def _count(least: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"wants a whole number, not {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"wants a number >= {least}, not {text!r}")
        return value

    parse.__name__ = "count"
    return parse


def _unquoted(value: str | None) -> str | None:
    """An option value as meant: IPython keeps the quotes of `--conversation "my notes"`."""
    if value and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _suggest(word: str, known: list[str]) -> str:
    bare = {k.lstrip("-"): k for k in known}
    near = difflib.get_close_matches(word.lstrip("-"), list(bare), n=1, cutoff=0.6)
    return f" (did you mean {bare[near[0]]}?)" if near else ""


def _parse(magic: Callable[..., Any], line: str, commands: tuple[str, ...] = ()) -> Any:
    """`line` parsed by `magic`'s parser; an unknown option or command says what was meant.

    argparse alone answers `--agnet` with "unrecognized arguments" and accepts any prefix of
    an option; here an option that is neither known nor an unambiguous prefix of one is a
    usage error naming the closest option.
    """
    parser: argparse.ArgumentParser = magic.parser  # type: ignore[attr-defined]
    try:
        argv = arg_split(line, strict=True)
    except ValueError as exc:
        raise UsageError(f"cannot read the options ({exc})") from None
    actions = parser._option_string_actions
    options = sorted(o for o in actions if o.startswith("--"))
    positional: list[str] = []
    value_next = False
    for token in argv:
        if value_next:
            value_next = False
            continue
        if token == "--":
            break
        if not token.startswith("-") or token.lstrip("-").replace(".", "", 1).isdigit():
            positional.append(token)
            continue
        name = token.split("=", 1)[0]
        matches = [o for o in options if o.startswith(name)] if name.startswith("--") else []
        action = actions.get(name) or (actions[matches[0]] if len(matches) == 1 else None)
        if action is None:
            raise UsageError(f"unknown option {name}{_suggest(name, options)}")
        value_next = "=" not in token and action.nargs != 0
    if commands and positional:
        first = positional[0]
        if first not in commands:
            raise UsageError(
                f"unknown command {first!r}{_suggest(first, list(commands))}; "
                f"commands: {', '.join(commands)}"
            )
    args = parser.parse_args(argv)
    if getattr(args, "conversation", None) is not None:
        args.conversation = _unquoted(args.conversation)
    return args


@magics_class
class LettaMagics(Magics):
    """`%%letta` sends the cell to a Letta agent; `%letta` manages the connection and runs."""

    default_agent = Unicode(
        None,
        allow_none=True,
        help="Agent (name or id) for %%letta without --agent; None uses "
        "the session's default agent.",
    ).tag(config=True)
    wait = Bool(False, help="Block each %%letta cell until its run settles, as --wait.").tag(
        config=True
    )
    timeout = Float(600.0, help="Bound (s) on a --wait cell; the run continues after it.").tag(
        config=True
    )
    max_hz = Float(10.0, help="Maximum widget updates per second.").tag(config=True)
    tail_chars = Int(
        4000, help="Characters of a long message the widget shows (the full text stays in Python)."
    ).tag(config=True)
    policy = CaselessStrEnum(
        ["ask", "approve", "deny"],
        default_value="ask",
        help="Approval requests: 'ask' shows buttons; 'approve'/'deny' answer automatically.",
    ).tag(config=True)
    runs_limit = Int(10, help="Rows %letta runs shows without --limit.").tag(config=True)
    concurrency = Int(4, help="Items of a %%letta map batch in flight at once.").tag(config=True)
    stall_seconds = Float(
        30.0, help="%letta dashboard flags a running row after this many seconds without a frame."
    ).tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.last_handle: Any = None

    # ---- plumbing ------------------------------------------------------------------------
    def _session(self) -> Any:
        from .connection import current

        return current()

    def _view(self, handle: Any, *, key: str | None = None) -> Any:
        from .widgets import RunView

        return RunView(handle, tail_chars=self.tail_chars or None, max_hz=self.max_hz, key=key)

    # ---- %%letta -------------------------------------------------------------------------
    @magic_arguments("%letta")  # usage line reads %%letta
    @argument(
        "--agent",
        "-a",
        help="agent name or id (default: %%config "
        "LettaMagics.default_agent, else the session's agent)",
    )
    @argument(
        "--new", action="store_true", help="start a fresh run even if this cell already has one"
    )
    @argument(
        "--conversation",
        "-c",
        metavar="NAME|new|ID",
        help="send in a conversation of the agent: NAME (created if missing), new (one of "
        "this cell's own), a conv- id, or default (the agent's own history); default: the "
        "conversation `%%letta connect --conversation` bound, else the agent's own history",
    )
    @argument("--key", help="explicit cursor key (default: the cell's identity)")
    @argument(
        "--wait",
        action="store_true",
        default=None,
        help="block until the run ends or asks for approval; print the transcript",
    )
    @argument(
        "--no-wait",
        dest="wait",
        action="store_false",
        help="do not block, even if LettaMagics.wait is set",
    )
    @argument(
        "--no-background",
        action="store_true",
        help="standard streaming (no resume): pings and a 1.5x client timeout",
    )
    @argument(
        "--timeout",
        type=_seconds,
        help="seconds: bound on --wait (and the expected duration of a --no-background run)",
    )
    @argument("--auto-approve", action="store_true", help="approve tool calls automatically")
    @argument("--auto-deny", action="store_true", help="deny tool calls automatically")
    @argument("--out", metavar="VAR", help="store the RunHandle in the variable VAR")
    @cell_magic("letta")  # type: ignore[arg-type]  # IPython types the decorator as Never
    def letta_cell(self, line: str, cell: str) -> None:
        """Send the cell body to a Letta agent as a background run and show it live.

        The cell returns at once; the widget streams, its buttons answer approvals. Re-running
        the cell resumes the same run (also after a kernel restart); `--new` starts another.

        `%%letta map DATAFRAME [--concurrency N] [--out VAR] [--agent A] [--key K]
        [--timeout S] [--auto-approve | --auto-deny] [--wait]`: the cell body is a template
        (`{column}`), run once per row in the background (see `lnb.map`).
        """
        head, _, rest = line.strip().partition(" ")
        if head == "map":
            self._map(rest, cell)
            return
        args = _parse(self.letta_cell, line)
        message = (cell or "").strip()
        if not message:
            raise UsageError("%%letta needs a message in the cell body")
        if args.auto_approve and args.auto_deny:
            raise UsageError("--auto-approve and --auto-deny exclude each other")
        if args.out is not None and not args.out.isidentifier():
            raise UsageError(f"--out wants a variable name, not {args.out!r}")
        try:
            self._send(args, message, line)
        except LettaNbError as err:
            _fail(err)

    # ---- %%letta map ---------------------------------------------------------------------
    @magic_arguments("%letta map")  # usage line reads %%letta map
    @argument("dataframe", metavar="DATAFRAME", help="the variable holding the rows (or a list)")
    @argument("--agent", "-a", help="agent name or id (default as for %%letta)")
    @argument(
        "--concurrency",
        type=_count(1),
        help="items in flight at once (default: %%config LettaMagics.concurrency)",
    )
    @argument("--key", help="explicit batch key (default: a hash of agent, template and rows)")
    @argument("--timeout", type=_seconds, help="seconds: limit of each item's run")
    @argument("--auto-approve", action="store_true", help="approve tool calls automatically")
    @argument("--auto-deny", action="store_true", help="deny tool calls automatically")
    @argument(
        "--wait",
        action="store_true",
        help="block until every item is done or waits for approval (LettaMagics.timeout)",
    )
    @argument("--out", metavar="VAR", help="store the Batch in the variable VAR")
    def letta_map(self, line: str) -> None:
        """Run the cell body, a template (`{column}`), over every row of DATAFRAME.

        One background run per row, at most --concurrency at a time; the cell returns at once
        and shows the batch view. Re-running the cell (also after a kernel restart) re-attaches
        the same batch: finished rows are shown, running ones followed, unsent ones sent.
        """

    def _map(self, line: str, cell: str) -> None:
        args = _parse(self.letta_map, line)
        template = (cell or "").strip()
        if not template:
            raise UsageError("%%letta map needs a template in the cell body, e.g. Summarise {text}")
        if args.auto_approve and args.auto_deny:
            raise UsageError("--auto-approve and --auto-deny exclude each other")
        if args.out is not None and not args.out.isidentifier():
            raise UsageError(f"--out wants a variable name, not {args.out!r}")
        ns = self.shell.user_ns if self.shell is not None else {}
        name = args.dataframe
        if name not in ns:
            raise UsageError(f"no variable {name!r} in the notebook (%%letta map DATAFRAME)")
        try:
            batch = self._session().map(
                ns[name],
                template,
                agent=args.agent or self.default_agent or None,
                concurrency=args.concurrency or self.concurrency,
                key=args.key,
                policy=self._policy(args),
                timeout=args.timeout,
            )
        except LettaNbError as err:
            _fail(err)
            return
        if args.out and self.shell is not None:
            self.shell.user_ns[args.out] = batch
        if args.wait:
            status = batch.wait(self.timeout)
            print(f"batch {status} · {batch.summary()}")
        display(batch)

    def _policy(self, args: Any) -> str | None:
        if args.auto_approve:
            return "approve"
        if args.auto_deny:
            return "deny"
        return None if self.policy == "ask" else self.policy

    def _send(self, args: Any, message: str, line: str = "") -> None:
        session = self._session()
        agent = args.agent or self.default_agent or None
        row = session.resolve(agent)
        ident = _kernel.cell_identity()
        where = row["id"] if args.conversation is None else f"{row['id']}\0{args.conversation}"
        key = cell_key(
            notebook=ident.notebook,
            cell_id=ident.cell_id,
            agent=where,
            source=message,
            explicit=args.key,
        )
        timeout = args.timeout if args.timeout is not None else self.timeout
        handle = session.send(
            message,
            row,
            key=key,
            new=args.new,
            background=not args.no_background,
            wait=False,
            timeout=args.timeout,
            policy=self._policy(args),
            conversation=args.conversation,
        )
        self.last_handle = handle
        if args.out and self.shell is not None:
            self.shell.user_ns[args.out] = handle
        # The view a re-run of *this* cell replaces: the cursor key alone is shared by every
        # cell that names the same `--key`, and their views must all stay.
        cell = ident.cell_id or hashlib.sha256(f"{line}\0{message}".encode()).hexdigest()[:16]
        view_key = f"{key}\0{cell}"
        wait = self.wait if args.wait is None else args.wait
        if wait:
            self._wait(handle, timeout, view_key)
        else:
            display(self._view(handle, key=view_key))

    def _wait(self, handle: Any, timeout: float, key: str) -> None:
        status = handle.wait(timeout)
        text = handle.transcript
        if text:
            print(text)
        if status not in SETTLED:
            _fail(
                f"still {status} after {timeout:g} s; the run goes on (re-run the cell to "
                f"resume it)"
            )
        elif status == ChainStatus.REQUIRES_APPROVAL:
            _fail(
                "the run is waiting for an approval: use the buttons below, "
                "--auto-approve / --auto-deny, or the handle's .approve() / .deny()"
            )
            if _kernel.in_kernel():
                display(self._view(handle, key=key))
        elif status in (ChainStatus.FAILED, ChainStatus.ERROR) and handle.error:
            _fail(handle.error)

    # ---- %letta --------------------------------------------------------------------------
    @magic_arguments("letta")
    @argument("command", choices=COMMANDS, help="what to do (see below)")
    @argument("args", nargs="*", help="URL, NAME or RUN_ID, depending on the command")
    @argument(
        "--api-key-env",
        metavar="VAR",
        help="connect: read the API key from environment variable VAR",
    )
    @argument(
        "--conversation",
        "-c",
        metavar="NAME|new|ID",
        help="connect: bind this notebook's sends to a conversation (new: this notebook's "
        "own, kept when the cell is re-run); runs: only this conversation's runs",
    )
    @argument("--active", action="store_true", help="runs: only created/running runs")
    @argument("--agent", "-a", help="runs / conversations: only this agent's")
    @argument("--limit", type=_count(1), help="runs / conversations: at most N rows")
    @argument(
        "--stall",
        type=_seconds,
        metavar="S",
        help="dashboard: flag a running row after S seconds without a frame",
    )
    @argument(
        "--from",
        dest="from_seq",
        type=_count(0),
        metavar="SEQ",
        help="attach: resume after this seq (default 0: the whole run)",
    )
    @line_magic("letta")  # type: ignore[arg-type]  # IPython types the decorator as Never
    def letta_line(self, line: str) -> Any:
        """Connection, agents and runs.

        %letta connect [URL] [--api-key-env VAR] [--conversation NAME|new|ID]
                                                    connect (URL → LETTA_BASE_URL → embedded);
                                                    --conversation binds this notebook to one
        %letta agents                               the server's agents (DataFrame)
        %letta agent NAME                           default agent for %%letta
        %letta conversations [--agent A] [--limit N]   the agent's conversations (DataFrame)
        %letta runs [--active] [--agent A] [--conversation C] [--limit N]
                                                    recent runs (DataFrame)
        %letta attach RUN_ID [--from SEQ]           follow an existing run live
        %letta cancel [RUN_ID]                      cancel a run (default: this kernel's last)
        %letta chunks RUN_ID                        every stored frame of a run (DataFrame)
        %letta status                               connection and the runs followed here
        %letta dashboard [--stall S]                live view of this kernel's runs and batches
                                                    and of the server's active runs

        %%letta map DATAFRAME [--concurrency N] [--out VAR] [--agent A] [--key K]
            the cell body is a template ({column}): one background run per row
        """
        args = _parse(self.letta_line, line, COMMANDS)
        command = args.command
        for option, owners in _OPTIONS.items():
            value = getattr(args, option)
            if value not in (None, False) and command not in owners:
                flag = "--from" if option == "from_seq" else "--" + option.replace("_", "-")
                where = " / ".join(f"`%letta {o}`" for o in owners)
                raise UsageError(f"{flag} only applies to {where}")
        low, high = _ARITY[command]
        if not low <= len(args.args) <= high:
            want = (
                "no argument"
                if high == 0
                else ("one argument" if low == high else "at most one argument")
            )
            raise UsageError(f"`%letta {command}` takes {want}, got {len(args.args)}")
        try:
            return getattr(self, f"_cmd_{command}")(args)
        except LettaNbError as err:
            _fail(err)
            return None

    def _cmd_connect(self, args: Any) -> None:
        from .connection import connect

        api_key = None
        if args.api_key_env:
            api_key = os.environ.get(args.api_key_env)
            if not api_key:
                raise ConfigurationError(f"environment variable {args.api_key_env} is not set")
        session = connect(args.args[0] if args.args else None, api_key)
        session.backend.health()  # connect() tolerates a remote server it cannot use yet
        agent = session.agent["name"] if session.agent else "none (use %letta agent NAME)"
        where = ""
        if args.conversation is not None:
            conv = session.use_conversation(args.conversation, notebook=_kernel.notebook_path())
            if conv is None:
                where = " · the agent's own history"
            elif conv.get("summary"):
                where = f" · conversation {conv['summary']} ({conv['id']})"
            else:
                where = f" · conversation {conv['id']}"
        print(f"connected to {session.backend.base_url} · agent {agent}{where}")

    def _cmd_agents(self, args: Any) -> None:
        display(self._session().agents_frame())

    def _cmd_agent(self, args: Any) -> None:
        row = self._session().use_agent(args.args[0])
        self.default_agent = row["name"]
        print(f"default agent: {row['name']} ({row['id']})")

    def _cmd_runs(self, args: Any) -> None:
        display(
            self._session().runs_frame(
                args.agent,
                active=True if args.active else None,
                limit=args.limit or self.runs_limit,
                conversation=args.conversation,
            )
        )

    def _cmd_conversations(self, args: Any) -> None:
        display(self._session().conversations_frame(args.agent, limit=args.limit or 100))

    def _cmd_attach(self, args: Any) -> None:
        handle = self._session().attach(args.args[0], args.from_seq or 0)
        self.last_handle = handle
        display(self._view(handle))

    def _cmd_cancel(self, args: Any) -> None:
        session = self._session()
        if args.args:
            run_id = args.args[0]
            follower = session.follower_for(run_id)
            if follower is not None:
                result = follower.cancel()
            else:
                agent_id = session.backend.get_run(run_id).get("agent_id")
                result = session.backend.cancel(agent_id, [run_id]).get(run_id, "cancelled")
        else:
            if self.last_handle is None:
                raise ConfigurationError("no run started here yet: `%letta cancel RUN_ID`")
            result = self.last_handle.cancel()  # waits (bounded) for a starting run's id
            run_id = self.last_handle.run_id
        print(f"cancel {run_id}: {result}")

    def _cmd_chunks(self, args: Any) -> None:
        display(self._session().chunks_frame(args.args[0]))

    def _cmd_dashboard(self, args: Any) -> None:
        from .widgets.dashboard import DashboardView

        session = self._session()
        stall = args.stall if args.stall is not None else self.stall_seconds
        display(DashboardView(session, stall_after=stall))

    def _cmd_status(self, args: Any) -> None:
        session = self._session()
        agent = session.agent["name"] if session.agent else "none"
        bound = session.conversation
        where = ""
        if bound:
            summary = f"{bound['summary']} " if bound.get("summary") else ""
            where = f" · conversation {summary}({bound['id']})"
        print(f"server {session.backend.base_url} · default agent {agent}{where}")
        if session.agent:
            conv_id = bound["id"] if bound else None
            for call in session.backend.pending_approval(session.agent["id"], conv_id):
                print(
                    f"approval pending: {call.get('name')}({call.get('arguments')}) "
                    f"[{call.get('tool_call_id')}] — answer with the buttons, "
                    "run.approve() or run.deny(reason)"
                )
        followers = session.followers()
        for batch in session.batches():
            print(f"batch {batch.key} · {batch.status} · {batch.summary()}")
        if not followers:
            print("no runs followed in this kernel yet")
        for f in followers:
            conv = session.conversation_label(f.conversation_id)
            print(
                f"run {f.run_id} · {f.status} · seq {f.last_seq} · chain of {len(f.runs)}"
                + (f" · conversation {conv}" if conv else "")
                + (f" · {f.warning}" if f.warning else "")
            )


_loaded: dict[int, LettaMagics] = {}


def load_ipython_extension(ip: Any) -> None:
    """`%load_ext letta_nb`: register the magics and make them `%config`-urable."""
    if id(ip) in _loaded:
        return
    magics = LettaMagics(ip)
    ip.register_magics(magics)
    if magics not in ip.configurables:
        ip.configurables.append(magics)
    _loaded[id(ip)] = magics


def unload_ipython_extension(ip: Any) -> None:
    magics = _loaded.pop(id(ip), None)
    if magics is None:
        return
    table = ip.magics_manager.magics
    for kind in ("line", "cell"):
        if table[kind].get("letta") is not None:
            del table[kind]["letta"]
    ip.magics_manager.registry.pop(type(magics).__name__, None)
    if magics in ip.configurables:
        ip.configurables.remove(magics)
