# A package, so that its conftest and modules never shadow the runtime's tests' plain `conftest`
# and `helpers` when both suites run in one pytest session (scripts/test.sh's app stage).
