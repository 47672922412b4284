"""``rlx serve``: a local web page for click-to-segment with SAM, and the HTTP API it uses.

The pieces, one concept per module:

* `cli` -- the ``rlx serve`` command: load and compile the model once (with
  progress on the terminal), bind the socket, run uvicorn;
* `app` -- the Starlette application factory (`create_app`): routes, error
  answers, the static page;
* `service` -- the model side of the server: encode an image, answer a
  prompt, segment everything; the locks that keep concurrent clients apart;
* `embeddings` -- the bounded LRU of encoded images (count and memory limits);
* `upload` -- reading an uploaded image under a size and a pixel limit;
* `prompts` -- validating a mask request's JSON, naming the field at fault;
* `png` -- a fast 1-bit PNG writer for masks, on `deflate`, a compiled DEFLATE
  encoder for mask rows (runs and one Huffman block);
* `errors` -- `ApiError`, the one exception a route turns into a 4xx JSON answer.

The page itself is ``static/`` (plain HTML, JavaScript and canvas; no build
step), served from the package.
"""

from .app import create_app
from .limits import ServeLimits
from .service import SegmentService

__all__ = ["create_app", "SegmentService", "ServeLimits"]
