"""Stage 3: SEC training of a DeepLab segmenter from localization cues, dense-CRF refinement,
prediction and PASCAL VOC test submissions (docs/method.md §4, §5, §7).

Modules, one concept each: ``losses`` (SEC's seeding, expansion with GWRP, constrain-to-boundary),
``crf`` (pydensecrf2 wrapper and process pool), ``models`` (DeepLab-LargeFOV, DeepLabV3+),
``data`` (training samples from cues or masks), ``train``, ``predict``, ``submission``.
"""
