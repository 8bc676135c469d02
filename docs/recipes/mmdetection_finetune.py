# my_config_augmented.py
_base_ = "./my_config.py"                          # the config you trained with
load_from = "work_dirs/my_config/epoch_12.pth"     # your trained detector
train_dataloader = dict(dataset=dict(
    data_root="out/final/",
    ann_file="train_augmented.json",
    data_prefix=dict(img="images/")))
optim_wrapper = dict(optimizer=dict(lr=0.002))
