import torch
from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2
from torchvision.transforms import v2

transforms = v2.Compose([v2.ToImage(), v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True)])
base = CocoDetection("out/final/images", "out/final/train_augmented.json", transforms=transforms)
# Images with at least one object that is not a crowd, as torchvision's detection reference keeps.
with_boxes = [i for i, image_id in enumerate(base.ids) if base.coco.getAnnIds(imgIds=image_id, iscrowd=False)]
dataset = torch.utils.data.Subset(wrap_dataset_for_transforms_v2(base, target_keys=("boxes", "labels", "iscrowd")), with_boxes)


def without_crowd_boxes(batch):
    """A crowd box covers many objects, not one: drop it, as torchvision's detection reference does."""
    images, targets = [], []
    for image, target in batch:
        keep = torch.tensor(target["iscrowd"]) == 0  # a list: the wrapper passes COCO's key through
        images.append(image)
        targets.append({"boxes": target["boxes"][keep], "labels": target["labels"][keep]})
    return images, targets


loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=True, collate_fn=without_crowd_boxes)

model = my_detector()  # built as for your first training, e.g. fasterrcnn_resnet50_fpn_v2(weights=None, num_classes=...)
model.load_state_dict(torch.load("my_detector.pth"))
model.train()
optimizer = torch.optim.SGD(model.parameters(), lr=0.002, momentum=0.9, weight_decay=1e-4)
for images, targets in loader:
    loss = sum(model(images, targets).values())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
