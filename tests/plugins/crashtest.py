"""Crash-test module: counts every ereport.crash.* event per key and diagnoses every 5th.

For payload member ``key`` (an integer) the module keeps two SERD engines:

* ``count.<key>`` (N=10**9, T=10**18 ns) never fires, so it holds every event of
  that key ever delivered — after any number of crashes it must hold exactly the
  stored events of that key, each once;
* ``fire.<key>`` (N=4, T=10**18 ns) fires on every 5th event of the key; the module
  then opens a case with the engine's events, convicts ``fault.test.crash`` and
  resets the engine, so the fault log holds floor(n_key / 5) ``list.suspect``.
"""

from __future__ import annotations

from typing import Any

from fmd.module import Plugin

NEVER_N = 10**9
FIRE_N = 4
WINDOW_NS = 10**18


class CrashTest(Plugin):
    name = "crash-test"
    description = "Crash-consistency test module (counts and diagnoses ereport.crash.*)"
    subscriptions = ("ereport.crash.*",)

    def recv(self, hdl: Any, ev: Any) -> None:
        key = ev.payload.get("key")
        if not isinstance(key, int) or isinstance(key, bool):
            return
        count, fire = f"count.{key}", f"fire.{key}"
        if not hdl.serd_exists(count):
            hdl.serd_create(count, NEVER_N, WINDOW_NS)
            hdl.serd_create(fire, FIRE_N, WINDOW_NS)
        hdl.serd_record(count, ev)
        if hdl.serd_record(fire, ev):
            case = hdl.case_open()
            hdl.case_add_serd(case, fire)
            hdl.case_add_suspect(case, hdl.create_fault("fault.test.crash", 100))
            hdl.case_solve(case)
            hdl.serd_reset(fire)
