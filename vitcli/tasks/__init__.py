"""What the commands do with trained runs: predict (splits and image files) and submissions,
ensembles, explanations (saliency maps), export (timm folder, ONNX), the eval report,
the training-batch preview and the runs table.

May import: vitcli.core, vitcli.data, vitcli.models, vitcli.viz, vitcli.loss, vitcli.launch, vitcli.engine,
vitcli.search (the runs table reads sweep studies).
"""
