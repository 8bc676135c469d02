from ultralytics import YOLO

model = YOLO("runs/detect/train/weights/best.pt")  # your trained detector
# optimizer="auto", the default, ignores lr0 and picks its own rate: name the optimizer.
model.train(data="out/final/data.yaml", epochs=20, optimizer="SGD", lr0=0.001)
