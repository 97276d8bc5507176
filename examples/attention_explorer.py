"""Open every layer's and head's attention in a browser: one self-contained HTML file for three photos.

Run: python examples/attention_explorer.py  (writes attention_explorer.html; open it in any browser)
"""

from PIL import Image
from skimage import data

import vitlens

model = vitlens.create_model("vit_small_patch16_224").eval()  # or vitlens.load("path/to/checkpoint")
photos = [Image.fromarray(data.chelsea()), Image.fromarray(data.astronaut()), Image.fromarray(data.coffee())]

# PIL images get the model's own pre-processing; names label the image selector
path = vitlens.viz.report.build(model, photos, "attention_explorer.html", names=["chelsea", "astronaut", "coffee"])
print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): hover over the image, move the layer slider")
