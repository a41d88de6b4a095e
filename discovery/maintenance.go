package discovery

import "strings"

// Maintenance mode, as Consul's agent has it: a critical check of type
// "maintenance" on the node (NodeMaintenanceCheckID) or on one service
// instance (ServiceMaintenanceCheckID). Being critical, it takes the node's
// or the instance's health to critical, so healthy-only queries and the
// data plane leave it out, and being an ordinary catalog check it lives in
// raft: it outlasts an agent restart until someone disables it.
const (
	NodeMaintenanceCheckID   = "_node_maintenance"
	serviceMaintenancePrefix = "_service_maintenance:"
	MaintenanceCheckType     = "maintenance"
)

// ServiceMaintenanceCheckID is the maintenance check of the instance id.
func ServiceMaintenanceCheckID(id string) string { return serviceMaintenancePrefix + id }

// IsMaintenanceCheck says whether a check ID is a maintenance check.
func IsMaintenanceCheck(checkID string) bool {
	return checkID == NodeMaintenanceCheckID || strings.HasPrefix(checkID, serviceMaintenancePrefix)
}
