"""The benchmark (``python main.py bench``): the engine against the official generation
strategy, a dense grid and the official code's recorded timings.

* :mod:`.inputs` -- the InterHand2.6M frame, the HALO checkpoint, the golden weights;
* :mod:`.reference_path` -- the official strategy, without the engine's shortcuts;
* :mod:`.compare` -- volumetric IoU and Chamfer between two reconstructions;
* :mod:`.engine_bench` -- engine timings, reference and agreement per architecture;
* :mod:`.official_code` -- against the golden ``timing.json``;
* :mod:`.timing` -- timers and the machine-load calibration;
* :mod:`.run` -- everything in one report.

The bench sits above the engine: nothing in :mod:`core.engine` imports it.
"""
