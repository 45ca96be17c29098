"""Test and demo support, not part of the installed registry: the offline hub mirror
(`tests.support.mirror`: server and fixture builders), sandbox registries (`tests.support.sandbox`)
and the demo (`tests.support.demo`, run by `make demo`)."""
