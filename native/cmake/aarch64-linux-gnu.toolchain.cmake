# Cross-compiling native/ for 64-bit ARM Linux with Debian's g++-aarch64-linux-gnu, on any host
# (the path must be absolute: CMake reads it from the build folder):
#   cmake -S native -B <build> -DCMAKE_TOOLCHAIN_FILE=$PWD/native/cmake/aarch64-linux-gnu.toolchain.cmake
# The one description of that target: tests/native/test_arm.py and the Dockerfile's core-aarch64
# stage both build with it, then run the result under qemu-aarch64 -L /usr/aarch64-linux-gnu (the
# target's libc and libstdc++, installed with the cross toolchain).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)  # native/CMakeLists.txt picks the NEON sources by this
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
