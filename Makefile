# The two commands of the README:
#   make demo   installs everything, builds the tiny guest and converges the demo VM (site.yml)
#   make test   installs everything and runs every test
VENV := .venv
BIN := $(VENV)/bin
PYTEST_WORKERS ?= 2
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: setup guest qemu-other qemu10 demo test units integration ssh-node sanity lint docs molecule clean

setup:
	bash tools/setup.sh

guest: setup
	$(BIN)/python tools/guest/build.py

# The second QEMU generation beside the system's (Debian 12: 10.0, Debian 13: 11.1).
qemu-other: setup
	bash tools/fetch-qemu-other.sh

qemu10: qemu-other

demo: guest
	$(BIN)/ansible-playbook site.yml

units: setup
	$(BIN)/pytest -q tests/unit

integration: guest qemu-other
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --ignore=tests/integration/test_ssh_node.py tests/integration

# A node reached over SSH (an sshd of the test's own on 127.0.0.1): the hypervisor role, the
# README's fleet example and the demo, each run twice; one node, so no parallel workers.
ssh-node: guest
	$(BIN)/pytest -q -p no:xdist tests/integration/test_ssh_node.py

sanity: setup
	bash tools/sanity.sh

lint: setup
	$(BIN)/ansible-lint --profile production

docs: setup
	bash tools/docs.sh

molecule: guest
	bash tools/molecule.sh

test: units integration ssh-node sanity lint docs molecule

clean:
	rm -rf build .pytest_cache .hypothesis tests/output
