// Package consulsuite runs HashiCorp's own test suite of
// github.com/hashicorp/consul/api (the version in vmesh's go.mod) against
// vmesh, and has no Go API.
//
// Its test builds the vmesh binary and the `consul` shim (shim/), copies
// the consul/api module's source from the module cache into a temp dir,
// and runs `go test -json` there over the tests of the files in
// suiteFiles, with the shim first on PATH: the module's sdk/testutil
// harness starts a `consul agent` per test, which the shim turns into a
// `vmesh agent`. Every test that fails must be listed, with a one-line
// reason, in expected-failures.txt, and every test listed must fail, so
// the list stays true; the pass ratio of each file and of the whole must
// reach minPassRatio; and the results section of
// docs/consul-compatibility.md must match the results
// (VMESH_SUITE_UPDATE=1 rewrites it).
//
// It must not import vmesh: it drives the built binary, as an operator
// would. The agents listen on 127.0.0.1 at the ports testutil's freeport
// allocated (never vmesh's defaults); nothing else is bound.
package consulsuite
