"""Building the model a run trains: litgpt's ``GPT`` with litgpt's GPT-NeoX initialisation (as ``litgpt
pretrain``), the same weights for a given seed whatever the strategy.

On one device and under DDP the whole model is built and initialised on every rank. Under FSDP it is built on the
meta device, sharded, and each rank writes its own shard of the weights a one-device run would draw: the seeded
generator replays the one-device build's draws one module at a time on a full-size temporary of that module's
parameters (its default initialisation at construction, then litgpt's), and each rank keeps its slice. A rank's host
memory is its shards plus the largest module's parameters, not the whole model.
"""

from __future__ import annotations

import copy
import functools

import torch
from litgpt.model import GPT
from torch import nn


def build_model(fabric, model_config, seed: int, seq_length: int, tie_embeddings: bool, compile_model: bool,
                on_meta: bool, activation_checkpointing: bool = False):
    """The model, set up by Fabric (sharded by its strategy where it shards), initialised from ``seed``; with
    ``activation_checkpointing``, each block recomputes its activations in the backward pass."""
    from litgpt.pretrain import initialize_weights  # litgpt's GPT-NeoX initialisation, as `litgpt pretrain`

    fabric.seed_everything(seed)
    with fabric.init_module(empty_init=on_meta):
        model = GPT(model_config)
    # on the meta device this only installs litgpt's per-module initialisers (drawing nothing); they run below
    initialize_weights(fabric, model, n_layer=model_config.n_layer, n_embd=model_config.n_embd)
    if tie_embeddings:
        model.transformer.wte.weight = model.lm_head.weight
    model.max_seq_length = seq_length
    if activation_checkpointing:  # before compiling and sharding, as torchtitan orders them
        from midtrain.train.devices import checkpoint_blocks

        checkpoint_blocks(model)
    if compile_model and not on_meta:  # FSDP compiles block by block (devices.shard_model)
        model = torch.compile(model)
    model = fabric.setup(model)
    if on_meta:
        initialize_shards(model.module, seed, fabric.device)
    return model


def _with_own_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def _full_copy(module: nn.Module, device: torch.device) -> nn.Module:
    """A shallow copy of ``module`` whose own parameters are new, full-size (unsharded) tensors."""
    temporary = copy.copy(module)
    temporary._parameters = {
        name: None if p is None else nn.Parameter(torch.empty(p.shape, dtype=p.dtype, device=device),
                                                  requires_grad=False)
        for name, p in module._parameters.items()}
    return temporary


def _initialiser(module: nn.Module):
    """What litgpt's initialisation calls on ``module``, applied to another module object (its temporary copy):
    the per-module initialiser litgpt installed (a partial bound to the module), or the class's own."""
    reset = getattr(module, "reset_parameters", None)
    if isinstance(reset, functools.partial) and reset.args and reset.args[0] is module:
        return lambda other: reset.func(other, *reset.args[1:], **reset.keywords)
    if callable(reset):
        return type(module).reset_parameters
    return None


def _local_view(full: torch.Tensor, mesh, placements) -> torch.Tensor:
    """This rank's slice of a full tensor under ``placements`` (``Shard(d)``: ``torch.chunk``'s pieces along d, as
    FSDP2 cuts them; ``Replicate``: all of it), as a view: no second copy of the tensor."""
    view = full
    coordinate = mesh.get_coordinate()
    for mesh_dim, placement in enumerate(placements):
        if placement.is_shard():
            pieces = torch.chunk(view, mesh.size(mesh_dim), dim=placement.dim)
            k = coordinate[mesh_dim]
            view = pieces[k] if k < len(pieces) else view.narrow(placement.dim, 0, 0)
    return view


@torch.no_grad()
def initialize_shards(model: nn.Module, seed: int, device: torch.device) -> None:
    """Write into each rank's shards the weights the one-device build draws from ``seed``: first the draws of every
    module's default initialisation at construction, in construction order, then litgpt's initialisation of every
    module, in the order it runs; each on a full-size temporary of one module, of which this rank keeps its slice."""
    from torch.distributed.tensor import DTensor

    torch.manual_seed(seed)  # the generator as fabric.seed_everything(seed) left it before the one-device build
    modules = [m for m in model.modules() if _with_own_parameters(m)]
    for module in modules:  # construction: each module's class initialises it (nn.Linear, nn.Embedding, norms)
        if callable(getattr(type(module), "reset_parameters", None)):
            type(module).reset_parameters(_full_copy(module, device))
    written: set[int] = set()
    for module in model.modules():  # litgpt's reset_parameters(model), module by module
        initialise = _initialiser(module)
        if initialise is None or not _with_own_parameters(module):
            continue
        temporary = _full_copy(module, device)
        initialise(temporary)
        for name, parameter in module._parameters.items():
            # a tied parameter (train.tie_embeddings) keeps the first module's draw: the one-device build ties after
            # initialising, so the head's weights are shared and the embedding's draw is dropped
            if parameter is None or id(parameter) in written:
                continue
            written.add(id(parameter))
            full = temporary._parameters[name]
            if isinstance(parameter, DTensor):
                parameter.to_local().copy_(_local_view(full, parameter.device_mesh, parameter.placements))
            else:
                parameter.copy_(full)
