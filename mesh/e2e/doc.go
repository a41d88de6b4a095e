// Package e2e holds vmesh's end-to-end tests: the ones that run the real
// vmesh binary as processes (clusters of agents on loopback, SIGKILL,
// exit codes, systemd notifications, the in-process proxies carrying real
// traffic), the ones that run it in network namespaces (capture, DNS
// capture, `vmesh redirect`, the three-"VM" lab on a bridge), and nothing
// else. It has no code outside its tests.
//
// The tests are black-box: they drive the binary through its flags, its
// HTTP API, its banner and its files, and use only leaf packages (raft,
// iptables, lab/testkit) for what a test builds itself (a foreign CA, a
// normalised rule dump). They must not import package mesh, whose
// internals may change under them.
//
// Running them:
//
//	go test -race -count=1 ./mesh/e2e/            # all of them (root runs the netns ones)
//	go test -race -count=1 -run TestCluster ./mesh/e2e/
//	go test -short ./mesh/e2e/                      # skips every process test
//
// The vmesh binary is built once per run, by the first test that needs
// it, so `-run XXX` builds nothing. Tests that need root (network
// namespaces, iptables, useradd) skip with the reason when not root; CI
// runs them as root.
//
// Every test calls t.Parallel. To run side by side each owns a loopback
// range that nothing else binds: the agents of the test with N below
// listen on 127.N.0.x (the HTTP API on :8500, the cluster port on :7400,
// DNS, admin and proxy listeners on the same addresses). A new test takes
// the next free N and adds its line here. Namespace tests bind 127.0.0.1
// inside namespaces of their own, named after the test.
//
//	N   test
//	1   TestClusterJoin
//	2   TestClusterPortRefusesStrangers
//	3   TestClusterLeaderKill
//	4   TestClusterVotersCap
//	5   TestClusterLeave
//	6   TestClusterNodeLiveness
//	7   TestClusterRecovery
//	8   TestClusterRecoveryRejoin
//	9   TestAgentInProcessProxyTCP
//	10  TestDurabilitySIGKILL
//	11  TestServiceFilesReload
//	12  TestSystemdNotify
//	13  TestDevAnswersLeaderWithin5s
//	14  TestAgentBadConfigExits2 (its agents exit before they listen)
//	15  TestJoinTokens
//	16  TestServerRejoinsAfterDowntime
//	17  TestLeaveRefusedFast
//	18  TestServersAndClients
//	19  TestClientCertificates
//	20  TestClientsWithoutServers
//	21  TestClusterLeaveRevokes
//	22  TestCARotation
//	23  TestScaleAgents (only with VMESH_SCALE_AGENTS; clients from 127.23.0.11)
//	24  TestSessionsAcrossClients
//	25  TestSessionTTLAcrossLeaderChange
//	26  TestACLsProcesses
//	27-29  reserved for the consul/api suite (lab/consulsuite): its agents
//	       listen on 127.0.0.1 at ports HashiCorp's freeport hands out,
//	       which sdk/testutil requires, never on vmesh's defaults
//	30  TestCatalogRegisterSnapshotRestore (client c1 at 127.30.0.11)
//	31  TestOperatorRaftProcesses
//	32  (kept for the catalog and operator tests)
//	33  TestConsulCLIIntentionsAndConfig
//	34  TestConsulCLIAgentOps
//	35  TestConsulCLIRulesEnforced
//	41  TestProxyL7EndToEnd
//	42  TestProxyNackKeepsServing
//	43  TestProxyRoundRobinFailoverRetry
//	44  TestProxyCertRotationUnderLoad
//	45  TestProxyConnectionFlood
//	46  TestProxyTracingEndToEnd
//	47  TestProxyTracingSampledOut
//	48  TestProxyAccessLogs
//	49  TestAdminListener
//	50  TestVersionNamesTheCommit
//	51  TestCatalogOwnNodeProcesses (client c1 at 127.51.0.11)
//	53  TestSidecarRecordIsTheNodeProxy
//
//	namespace                       test
//	vmt-capture                     TestCaptureAgentNetns
//	vmt-capture-bad                 TestCaptureAgentBadConfigNetns
//	vmt-dns-capture                 TestDNSCaptureForwardNetns
//	vmt-redirect                    TestRedirectNetns
//	vmtlab-br, vmtlab-n1..n3        TestCaptureMeshNetns (also users vmtlaba, vmtlabb and /etc/netns/vmtlab-n*)
//	vmt-cap2-in-br, -n1, -n2        TestInboundCaptureAndHostIdentityNetns (also /etc/netns/vmt-cap2-in-n1)
//	vmt-cap2-dns-br, -n1, -n2       TestDNSRecursionNetns
//
// Nothing here touches the host's own iptables, environment or fixed
// paths: an agent's environment (NOTIFY_SOCKET) is set on its command,
// never with t.Setenv, which would reach every test's agents.
//
// Tests wait on conditions (testkit.WaitFor), never on fixed sleeps; the
// few timers left pace a load generator or a sampler and say so.
package e2e
