"""Procedural two-hand data with exact ground truth.

* :mod:`.sdf_primitives` -- signed-distance functions of tapered capsules and sphere-swept polygons;
* :mod:`.template` / :mod:`.pose_sampler` -- a template right hand, shape variation, joint limits,
  forward kinematics to 21 keypoints;
* :mod:`.hand_model` -- the watertight hand surface driven by 21 keypoints (an SDF bound);
* :mod:`.scenes` -- two-hand interaction configurations and contact resolution;
* :mod:`.surface` -- coarse-to-fine marching cubes of an SDF;
* :mod:`.render` -- camera sampling and a z-buffer rasteriser for 256 x 256 images;
* :mod:`.noise` -- detector-like keypoint noise for network K;
* :mod:`.samples` -- training samples (:func:`generate_sample`) and a torch ``Dataset``.
"""
