from fmd.module import Plugin


class SerdTest(Plugin):
    name = "serd-test"
    description = "SERD test module"
    subscriptions = ("ereport.test.*",)

    def recv(self, hdl, ev):
        name = "serd." + ev.cls
        if not hdl.serd_exists(name):
            hdl.serd_create(name, 2, 3600 * 10**9)
        if hdl.serd_record(name, ev):
            case = hdl.case_open()
            hdl.case_add_serd(case, name)
            hdl.case_add_suspect(case, hdl.create_fault("fault.test.thing", 100))
            hdl.case_solve(case)
            hdl.serd_reset(name)
