from detectron2.config import get_cfg
from detectron2.data.datasets import register_coco_instances
from detectron2.engine import DefaultTrainer

register_coco_instances("mydata_augmented", {}, "out/final/train_augmented.json", "out/final/images")
cfg = get_cfg()
cfg.merge_from_file("my_config.yaml")          # the config you trained with
cfg.MODEL.WEIGHTS = "output/model_final.pth"    # your trained detector
cfg.MODEL.MASK_ON = False
cfg.DATASETS.TRAIN = ("mydata_augmented",)
cfg.SOLVER.BASE_LR = cfg.SOLVER.BASE_LR / 10
cfg.OUTPUT_DIR = "output_augmented"
trainer = DefaultTrainer(cfg)
trainer.resume_or_load(resume=False)
trainer.train()
