print("hello from gcpgpu")
