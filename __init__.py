"""LoRA Lab: train LoRA adapters for Stable Diffusion inside a ComfyUI graph."""
WEB_DIRECTORY = "./js"

# ComfyUI imports this folder as a package. pytest may import this file on its own (a checkout folder
# whose name is not an identifier, such as a temporary clone); then there are no nodes to register.
if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
