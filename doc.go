// Command vmesh is the vmesh service mesh agent and CLI, one static binary
// per host. main only turns process signals into a context and hands the
// arguments to mesh.Main, the composition root; it holds no logic, so
// everything it runs is testable in package mesh. ARCHITECTURE.md draws
// the whole picture.
package main
