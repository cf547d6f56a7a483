"""`mia-tuner demo` (and `mia-tuner` alone): the offline controlled-membership demo."""

from __future__ import annotations

from ..config import DEVICES, ModelConfig, OutputFolders
from .args import check_out_dir
from .fields import field_help
from .options import add_cache_options, add_overwrite_option, print_result



def add_parser(commands) -> None:
    demo = commands.add_parser("demo", help="offline controlled-membership demo (the default)")
    demo.add_argument("--out", default=OutputFolders.demo, help=field_help(OutputFolders, "demo"))
    demo.add_argument("--device", default=ModelConfig.device, choices=DEVICES,
                      help=field_help(ModelConfig, "device"))
    add_cache_options(demo)
    add_overwrite_option(demo)


def run(args) -> None:
    """Also with no command at all: then ``args`` has none of the demo's options."""
    from ..demo import demo_identity, run_demo
    from ..rundir import claim_run_dir

    out = getattr(args, "out", OutputFolders.demo)
    check_out_dir(out)
    with claim_run_dir(out, "demo", demo_identity(), getattr(args, "overwrite", False)):
        print_result(run_demo(out=out, cache_dir=getattr(args, "cache_dir", None),
                              device=getattr(args, "device", ModelConfig.device)), grouped=True)
