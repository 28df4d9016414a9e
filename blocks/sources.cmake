# Blocks, parameters, initializers, file formats.
set(CAIRN_BLOCKS_SOURCES
  blocks/initializer.cpp
  blocks/parameter.cpp
  blocks/layers.cpp
  blocks/block.cpp
  blocks/safetensors.cpp
)
