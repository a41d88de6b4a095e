package discovery

import "testing"

// TestMaintenanceCheckSurvivesReRegistration: re-registering a service
// (a service file's sync at start, say) replaces its checks but keeps
// its maintenance check, as Consul keeps it.
func TestMaintenanceCheckSurvivesReRegistration(t *testing.T) {
	s := NewStore()
	if err := s.EnsureNode(1, &Node{Name: "n1", Address: "10.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	inst := &Instance{Node: "n1", ID: "web-1", Service: "web", Weights: Weights{Passing: 1, Warning: 1}}
	if err := s.EnsureService(2, inst, []*Check{{CheckID: "old", Name: "old", Status: HealthPassing}}); err != nil {
		t.Fatal(err)
	}
	maint := &Check{Node: "n1", CheckID: ServiceMaintenanceCheckID("web-1"), Status: HealthCritical, ServiceID: "web-1", Type: MaintenanceCheckType}
	if err := s.EnsureCheck(3, maint); err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureService(4, inst, []*Check{{CheckID: "new", Name: "new", Status: HealthPassing}}); err != nil {
		t.Fatal(err)
	}
	_, checks, err := s.NodeChecks(nil, "n1")
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, c := range checks {
		ids[c.CheckID] = true
	}
	if !ids["_service_maintenance:web-1"] || !ids["new"] || ids["old"] {
		t.Errorf("checks after re-registration = %v; want new and the maintenance check", ids)
	}
	if !IsMaintenanceCheck("_node_maintenance") || !IsMaintenanceCheck("_service_maintenance:x") || IsMaintenanceCheck("mem") {
		t.Error("IsMaintenanceCheck")
	}
}
