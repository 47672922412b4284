"""``rlx serve``: the click-to-segment page on a local web server.

    rlx serve --checkpoint sam_vit_b_01ec64.pth          # http://127.0.0.1:8000
    rlx serve --checkpoint sam_vit_h_4b8939.pth --model vit_h --port 8080

Order of work, so mistakes surface before the slow part: check the options,
bind the socket (a port in use is an error at once), then load the weights
and compile the encoder and the usual prompt buckets with progress on the
terminal, then serve. The server binds 127.0.0.1 unless told otherwise;
any other ``--host`` prints a warning, because the server has no
authentication.

Without ``--checkpoint`` the model runs on synthetic random weights; the
terminal, ``/api/health`` and the page all say so.

``--model small`` (hidden from ``--help``, as for ``rlx segment``) selects
the tiny test configuration of `models.sam.config.small_config`, so the
browser test starts a real server in seconds; ``--seed`` (hidden) picks its
synthetic weights.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
import time
import warnings

from rlx.errors import InputError

from ..cli_args import add_model_arguments

__all__ = ["COMMAND", "add_arguments", "run"]

MODELS = ("vit_b", "vit_l", "vit_h")
HIDDEN_MODELS = ("small",)
LOOPBACK = ("localhost",)
#: prompt buckets compiled at start: one and two clicks (or a box, or a box and a click)
START_BUCKETS = ((2, False), (3, False))


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; the server "
                        "has no authentication)")
    p.add_argument("--port", default="8000", help="port (default 8000; 0 = any free port)")
    p.add_argument("--max-upload-mb", default="50", metavar="MB",
                   help="largest upload (default 50 MB)")
    p.add_argument("--max-megapixels", default="50", metavar="MP",
                   help="largest image, width x height (default 50 megapixels)")
    p.add_argument("--cache-images", default="16", metavar="N",
                   help="encoded images kept (default 16; least recently used dropped first)")
    p.add_argument("--cache-mb", default="512", metavar="MB",
                   help="memory for kept embeddings (default 512 MB; ViT-B: 4 MB per image)")
    p.add_argument("--seed", type=str, default="0", help=argparse.SUPPRESS)


def _positive(text: str, option: str, kind=float):
    try:
        v = kind(text)
    except ValueError:
        raise InputError(f"malformed {option} {text!r}: expected a "
                         f"{'whole ' if kind is int else ''}number") from None
    if not v > 0 or v != v or v == float("inf"):
        raise InputError(f"{option} must be positive, got {text!r}")
    return v


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise InputError(f"malformed --port {text!r}: expected a number 0..65535") from None
    if not 0 <= port <= 65535:
        raise InputError(f"--port must be in 0..65535, got {port}")
    return port


def is_loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port), or one clear `InputError`."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise InputError(f"cannot resolve --host {host!r}: {e.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror} (another server on "
                         "that port? try --port 0 for any free port)") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket, host: str) -> str:
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def run(args: argparse.Namespace) -> int:
    from rlx.cli.compile import Progress
    from rlx.runtime.profile import resolve_profile

    from ..config import get_config
    from .limits import MB, ServeLimits

    model = args.model
    if model not in MODELS + HIDDEN_MODELS:
        raise InputError(f"unknown --model {model!r}; choose from {', '.join(MODELS)}")
    if args.checkpoint is not None and not os.path.isfile(args.checkpoint):
        raise InputError(f"checkpoint not found: {args.checkpoint}")
    try:
        seed = int(args.seed)
    except ValueError:
        raise InputError(f"malformed --seed {args.seed!r}: expected an integer") from None
    limits = ServeLimits(
        max_upload_bytes=int(_positive(args.max_upload_mb, "--max-upload-mb") * MB),
        max_pixels=int(_positive(args.max_megapixels, "--max-megapixels") * 1e6),
        cache_images=_positive(args.cache_images, "--cache-images", int),
        cache_bytes=int(_positive(args.cache_mb, "--cache-mb") * MB))
    port = _port(args.port)
    profile = resolve_profile(args.profile, args.checkpoint)
    config = get_config(model)
    if not is_loopback(args.host):
        print(f"WARNING: --host {args.host}: the server is reachable from other machines and "
              "has NO authentication; anyone who can connect can upload images and use this "
              "machine's CPU. Use it only on a network you trust.", file=sys.stderr)
    sock = bind(args.host, port)  # before the slow part: a port in use fails at once

    from ..model import build_sam
    from ..weights import SyntheticWeightsWarning
    from .app import create_app
    from .service import SYNTHETIC_NOTE, SegmentService

    synthetic = args.checkpoint is None
    if synthetic:
        print(f"WARNING: {SYNTHETIC_NOTE}", file=sys.stderr)
    progress = Progress(3 + len(START_BUCKETS))
    t0 = time.perf_counter()
    progress.start(f"{model}: weights, image encoder + neck")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntheticWeightsWarning)  # announced above, once
        sam = build_sam(config, checkpoint=args.checkpoint, profile=profile, seed=seed)
    progress.step()
    service = SegmentService(sam, limits, model_name=model)
    for n, has_mask in START_BUCKETS:
        progress.start(f"prompt -> masks for {n} prompt tokens")
        service.compile_buckets([(n, has_mask)])
        progress.step()
    progress.start("a first click (post-processing and PNG kernels)")
    service.warm_up()
    progress.step()
    progress.start("segment everything: the batched prompt decoder")
    service.warm_up_everything()
    progress.step()
    progress.finish()
    print(f"model {model} ready in {time.perf_counter() - t0:.1f} s (profile {profile.name}, "
          f"backend {profile.backend}, {'SYNTHETIC weights' if synthetic else args.checkpoint})",
          file=sys.stderr)

    import uvicorn

    app = create_app(service)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           timeout_graceful_shutdown=2))
    print(f"serving on {_url(sock, args.host)} (Ctrl-C to stop)", flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        service.close()
        sock.close()
    return 0


def _command():
    from rlx.zoo import Command

    return Command(name="serve",
                   help="a local web page to segment images with SAM by clicking (HTTP API too)",
                   add_arguments=add_arguments, run=run)


COMMAND = _command()
