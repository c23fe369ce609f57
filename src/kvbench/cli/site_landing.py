"""`kvbench site-landing [HTML_DIR]`: kvbench's page of a published asv site (kvbench.asv.landing), linked from
asv's navigation bar. scripts/bench.sh runs it after `asv publish`; a failure is one line and leaves asv's site as
it is."""

from __future__ import annotations

import pathlib
import sys

from kvbench.cli.flags import flag
from kvbench.errors import KvbenchError


def add(sub) -> None:
    p = sub.add_parser("site-landing", help="add kvbench's page (latency against tokens per machine, x ideal, "
                                            "failures and reasons) to a published asv site")
    p.add_argument("html_dir", nargs="?", default=None, help="the published site (default: the config's html_dir)")
    flag(p, "results-dir", default=None, metavar="DIR", help="asv's results (default: the config's results_dir)")
    flag(p, "state-log", default=None, metavar="FILE",
         help="KVBENCH_STATE_LOG of the run (bench.sh: .asv/run-log.jsonl): the reasons of failures and skips")
    flag(p, "config", default="asv.conf.json", metavar="FILE", help="asv's configuration (default asv.conf.json)")
    flag(p, "machine", default=None, metavar="NAME",
         help="this host's asv machine (bench.sh passes it): the state log is its run, and where its results hold "
              "no KVCacheWriteBF16 x ideal its copy bandwidth comes from KVBENCH_COPY_BW or kvbench's cache")
    p.set_defaults(run=cmd_site_landing)


def cmd_site_landing(args) -> int:
    """Write the page; any failure is one line on stderr (exit 1, or the error's own code), asv's site untouched
    but for the page's files."""
    from kvbench.asv import landing

    try:
        conf = landing.config(args.config)
        html_dir = pathlib.Path(args.html_dir) if args.html_dir else conf["html_dir"]
        results_dir = pathlib.Path(args.results_dir) if args.results_dir else conf["results_dir"]
        done = landing.write(html_dir, results_dir, conf["benchmark_dir"], args.state_log, args.machine)
    except KvbenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - the site must not depend on this page: one line, never a traceback
        print(f"kvbench: error: site-landing: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    link = "linked from index.html" if done["linked"] else "NOT linked (index.html has no navigation bar)"
    print(f"kvbench page written to {done['page']} ({len(done['machines'])} machine(s), {done['panels']} charts; "
          f"{link})")
    return 0
