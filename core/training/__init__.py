"""Training and evaluation of networks K, I, R and the HALO baseline (see docs/ARCHITECTURE.md).

* :mod:`.datasets` -- synthetic (folder / on the fly) and InterHand2.6M items;
* :mod:`.losses` -- the reference losses as pure functions;
* :mod:`.netconfigs` -- our network configurations (building them: core.models.registry);
* :mod:`.recipes` -- per-network model building, initialisation, optimiser and loss;
* :mod:`.trainer` -- the loop: checkpoints, exact resume, metrics, torchrun / DDP;
* :mod:`.evaluation` -- IoU / Chamfer / penetration / MPJPE through the engine;
* :mod:`.shipping` -- writing the compact shipped-weights folder (shared encoder, float16).

Nothing is imported here, so that importing one module stays cheap.
"""
