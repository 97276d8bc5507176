"""Where does each head of the last layer look? Per-head class-token maps for one photo.

Run: python examples/attention_maps.py  (writes attention_heads.png)
"""

import torch
from PIL import Image
from skimage import data

import vitlens

model = vitlens.create_model("vit_small_patch16_224").eval()  # or vitlens.load("path/to/checkpoint")
image = vitlens.transforms_for(model)(Image.fromarray(data.chelsea()))[None]  # (1, 3, 224, 224)

with torch.no_grad():
    out = model(image, return_attention=[-1])  # maps of the last layer only; the rest run fused

layout = model.token_layout(image)  # where the class token sits, and the patch grid (14, 14)
maps = out.attentions[-1][0, :, layout.class_index, layout.patch_slice]  # (heads, 196)
maps = maps.reshape(-1, *layout.grid)  # (heads, 14, 14)
vitlens.viz.head_grid(maps, image[0], path="attention_heads.png", title="class token -> patches, last layer")
print("wrote attention_heads.png; top class:", out.logits.argmax(-1).item())
