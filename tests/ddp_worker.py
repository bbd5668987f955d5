"""Run by ``accelerate launch`` from test_train.py: train, then save this rank's parameters."""

import json
import sys

from accelerate import PartialState
from safetensors.torch import save_file

from r3mem.training.train import TrainConfig, train

if __name__ == "__main__":
    config = TrainConfig(**json.loads(sys.argv[1]))
    model = train(config)
    tensors = {k: v.detach().contiguous() for k, v in model.trainable_parameters().items()}
    save_file(tensors, f"{config.out_dir}/rank{PartialState().process_index}.safetensors")
