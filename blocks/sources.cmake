# Blocks, parameters, initializers, file formats.
set(CAIRN_BLOCKS_SOURCES
  blocks/initializer.cpp
  blocks/parameter.cpp
  blocks/layers.cpp
  blocks/block.cpp
  blocks/hybridize.cpp
  blocks/safetensors.cpp
  blocks/safetensors_dtypes.cpp
  blocks/idx.cpp
  blocks/loss.cpp
  blocks/optimizer.cpp
  blocks/trainer.cpp
  blocks/trainer_data_parallel.cpp
  blocks/checkpoint.cpp
  blocks/lr_schedule.cpp
  blocks/data_loader.cpp
)
