package proxy

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestParsePolicyDefaults: a cluster that says nothing gets Envoy's
// defaults; an outlier_detection that says nothing gets Envoy's too.
func TestParsePolicyDefaults(t *testing.T) {
	c := policyCluster(cluster.Cluster_ROUND_ROBIN, equalEps(1)...)
	c.OutlierDetection = &cluster.OutlierDetection{}
	s, err := parseCluster(c)
	if err != nil {
		t.Fatal(err)
	}
	if want := (breakerSpec{maxConns: 1024, maxPending: 1024, maxRequests: 1024, maxRetries: 3}); !reflect.DeepEqual(s.breakers, want) {
		t.Errorf("breakers %+v, want %+v", s.breakers, want)
	}
	if s.choiceCount != 2 || s.ringMin != 1024 || s.ringMax != 8388608 || s.maglevSize != 65537 || s.panicThreshold != 50 {
		t.Errorf("lb defaults: choice %d ring %d..%d maglev %d panic %v", s.choiceCount, s.ringMin, s.ringMax, s.maglevSize, s.panicThreshold)
	}
	want := outlierSpec{consec5xx: 5, consecGateway: 5, consecLocal: 5, enforce5xx: 100, enforceGateway: 0, enforceLocal: 100,
		interval: 10 * time.Second, baseEjection: 30 * time.Second, maxEjection: 300 * time.Second, maxEjectedPct: 10}
	if !reflect.DeepEqual(*s.outlier, want) {
		t.Errorf("outlier %+v, want %+v", *s.outlier, want)
	}
}

// TestParsePolicyFields: each field is read into the spec.
func TestParsePolicyFields(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lb    cluster.Cluster_LbPolicy
		set   func(*cluster.Cluster)
		check func(*clusterSpec) bool
	}{
		{"choice_count", cluster.Cluster_LEAST_REQUEST, func(c *cluster.Cluster) {
			c.LbConfig = &cluster.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &cluster.Cluster_LeastRequestLbConfig{ChoiceCount: wrapperspb.UInt32(5)}}
		}, func(s *clusterSpec) bool { return s.choiceCount == 5 }},
		{"ring sizes", cluster.Cluster_RING_HASH, func(c *cluster.Cluster) {
			c.LbConfig = &cluster.Cluster_RingHashLbConfig_{RingHashLbConfig: &cluster.Cluster_RingHashLbConfig{
				MinimumRingSize: wrapperspb.UInt64(64), MaximumRingSize: wrapperspb.UInt64(4096), HashFunction: cluster.Cluster_RingHashLbConfig_XX_HASH}}
		}, func(s *clusterSpec) bool {
			return s.ringMin == 64 && s.ringMax == 4096 && s.lb == cluster.Cluster_RING_HASH
		}},
		{"table_size", cluster.Cluster_MAGLEV, func(c *cluster.Cluster) {
			c.LbConfig = &cluster.Cluster_MaglevLbConfig_{MaglevLbConfig: &cluster.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(251)}}
		}, func(s *clusterSpec) bool { return s.maglevSize == 251 && s.lb == cluster.Cluster_MAGLEV }},
		{"healthy_panic_threshold", cluster.Cluster_RANDOM, func(c *cluster.Cluster) {
			c.CommonLbConfig = &cluster.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 25}}
		}, func(s *clusterSpec) bool { return s.panicThreshold == 25 }},
		{"thresholds", cluster.Cluster_ROUND_ROBIN, func(c *cluster.Cluster) {
			c.CircuitBreakers = &cluster.CircuitBreakers{Thresholds: []*cluster.CircuitBreakers_Thresholds{{
				Priority: core.RoutingPriority_DEFAULT, MaxConnections: wrapperspb.UInt32(1), MaxPendingRequests: wrapperspb.UInt32(2),
				MaxRequests: wrapperspb.UInt32(3), MaxRetries: wrapperspb.UInt32(4),
			}}}
		}, func(s *clusterSpec) bool {
			return s.breakers == breakerSpec{maxConns: 1, maxPending: 2, maxRequests: 3, maxRetries: 4}
		}},
		{"retry_budget", cluster.Cluster_ROUND_ROBIN, func(c *cluster.Cluster) {
			c.CircuitBreakers = &cluster.CircuitBreakers{Thresholds: []*cluster.CircuitBreakers_Thresholds{{
				RetryBudget: &cluster.CircuitBreakers_Thresholds_RetryBudget{BudgetPercent: &typev3.Percent{Value: 12.5}, MinRetryConcurrency: wrapperspb.UInt32(7)},
			}}}
		}, func(s *clusterSpec) bool {
			return s.breakers.budget != nil && *s.breakers.budget == retryBudget{percent: 12.5, minConcurrency: 7}
		}},
		{"retry_budget defaults", cluster.Cluster_ROUND_ROBIN, func(c *cluster.Cluster) {
			c.CircuitBreakers = &cluster.CircuitBreakers{Thresholds: []*cluster.CircuitBreakers_Thresholds{{
				RetryBudget: &cluster.CircuitBreakers_Thresholds_RetryBudget{},
			}}}
		}, func(s *clusterSpec) bool {
			return s.breakers.budget != nil && *s.breakers.budget == retryBudget{percent: 20, minConcurrency: 3}
		}},
		{"outlier_detection", cluster.Cluster_ROUND_ROBIN, func(c *cluster.Cluster) {
			c.OutlierDetection = &cluster.OutlierDetection{
				Consecutive_5Xx: wrapperspb.UInt32(7), ConsecutiveGatewayFailure: wrapperspb.UInt32(8), ConsecutiveLocalOriginFailure: wrapperspb.UInt32(9),
				EnforcingConsecutive_5Xx: wrapperspb.UInt32(50), EnforcingConsecutiveGatewayFailure: wrapperspb.UInt32(60),
				EnforcingConsecutiveLocalOriginFailure: wrapperspb.UInt32(70), SplitExternalLocalOriginErrors: true,
				Interval: durationpb.New(time.Second), BaseEjectionTime: durationpb.New(2 * time.Second),
				MaxEjectionTime: durationpb.New(3 * time.Second), MaxEjectionTimeJitter: durationpb.New(4 * time.Second),
				MaxEjectionPercent: wrapperspb.UInt32(33), AlwaysEjectOneHost: wrapperspb.Bool(false),
				EnforcingSuccessRate: wrapperspb.UInt32(0), EnforcingFailurePercentage: wrapperspb.UInt32(0),
			}
		}, func(s *clusterSpec) bool {
			return *s.outlier == outlierSpec{consec5xx: 7, consecGateway: 8, consecLocal: 9, enforce5xx: 50, enforceGateway: 60,
				enforceLocal: 70, split: true, interval: time.Second, baseEjection: 2 * time.Second, maxEjection: 3 * time.Second,
				jitter: 4 * time.Second, maxEjectedPct: 33, alwaysEjectOne: false}
		}},
		{"max_ejection_time defaults to the larger base", cluster.Cluster_ROUND_ROBIN, func(c *cluster.Cluster) {
			c.OutlierDetection = &cluster.OutlierDetection{BaseEjectionTime: durationpb.New(10 * time.Minute)}
		}, func(s *clusterSpec) bool { return s.outlier.maxEjection == 10*time.Minute }},
	} {
		c := policyCluster(tc.lb, equalEps(1)...)
		tc.set(c)
		s, err := parseCluster(c)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !tc.check(s) {
			t.Errorf("%s: not read: %+v (outlier %+v)", tc.name, s, s.outlier)
		}
	}
}

// TestParsePolicyRefused: what the proxy does not honour is NACKed, naming
// the field.
func TestParsePolicyRefused(t *testing.T) {
	for _, tc := range []struct {
		lb   cluster.Cluster_LbPolicy
		set  func(*cluster.Cluster)
		want string
		err  error
	}{
		{cluster.Cluster_LOAD_BALANCING_POLICY_CONFIG, func(*cluster.Cluster) {}, "cluster c.lb_policy LOAD_BALANCING_POLICY_CONFIG", ErrUnsupported},
		{cluster.Cluster_RING_HASH, func(c *cluster.Cluster) {
			c.LbConfig = &cluster.Cluster_RingHashLbConfig_{RingHashLbConfig: &cluster.Cluster_RingHashLbConfig{HashFunction: cluster.Cluster_RingHashLbConfig_MURMUR_HASH_2}}
		}, "cluster c.ring_hash_lb_config.hash_function MURMUR_HASH_2", ErrUnsupported},
		{cluster.Cluster_RING_HASH, func(c *cluster.Cluster) {
			c.LbConfig = &cluster.Cluster_RingHashLbConfig_{RingHashLbConfig: &cluster.Cluster_RingHashLbConfig{
				MinimumRingSize: wrapperspb.UInt64(100), MaximumRingSize: wrapperspb.UInt64(10)}}
		}, "cluster c.ring_hash_lb_config.minimum_ring_size 100 > maximum_ring_size 10", ErrInvalid},
		{cluster.Cluster_RING_HASH, func(c *cluster.Cluster) {
			c.LbConfig = &cluster.Cluster_RingHashLbConfig_{RingHashLbConfig: &cluster.Cluster_RingHashLbConfig{MaximumRingSize: wrapperspb.UInt64(1 << 30)}}
		}, "cluster c.ring_hash_lb_config.maximum_ring_size", ErrInvalid},
		{cluster.Cluster_ROUND_ROBIN, func(c *cluster.Cluster) {
			c.LbConfig = &cluster.Cluster_RingHashLbConfig_{RingHashLbConfig: &cluster.Cluster_RingHashLbConfig{}}
		}, "cluster c.ring_hash_lb_config with lb_policy ROUND_ROBIN", ErrInvalid},
		{cluster.Cluster_MAGLEV, func(c *cluster.Cluster) {
			c.LbConfig = &cluster.Cluster_MaglevLbConfig_{MaglevLbConfig: &cluster.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(1000)}}
		}, "cluster c.maglev_lb_config.table_size 1000", ErrInvalid},
		{cluster.Cluster_LEAST_REQUEST, func(c *cluster.Cluster) {
			c.LbConfig = &cluster.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &cluster.Cluster_LeastRequestLbConfig{ChoiceCount: wrapperspb.UInt32(1)}}
		}, "cluster c.least_request_lb_config.choice_count 1", ErrInvalid},
		{cluster.Cluster_LEAST_REQUEST, func(c *cluster.Cluster) {
			c.LbConfig = &cluster.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &cluster.Cluster_LeastRequestLbConfig{
				ActiveRequestBias: &core.RuntimeDouble{DefaultValue: 2}}}
		}, "cluster c.least_request_lb_config.active_request_bias", ErrUnsupported},
		{cluster.Cluster_ROUND_ROBIN, func(c *cluster.Cluster) {
			c.LbConfig = &cluster.Cluster_RoundRobinLbConfig_{RoundRobinLbConfig: &cluster.Cluster_RoundRobinLbConfig{}}
		}, "cluster c.round_robin_lb_config", ErrUnsupported},
		{cluster.Cluster_ROUND_ROBIN, func(c *cluster.Cluster) {
			c.CommonLbConfig = &cluster.Cluster_CommonLbConfig{IgnoreNewHostsUntilFirstHc: true}
		}, "cluster c.common_lb_config.ignore_new_hosts_until_first_hc", ErrUnsupported},
		{cluster.Cluster_ROUND_ROBIN, func(c *cluster.Cluster) {
			c.CommonLbConfig = &cluster.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 120}}
		}, "cluster c.common_lb_config.healthy_panic_threshold 120", ErrInvalid},
		{cluster.Cluster_ROUND_ROBIN, func(c *cluster.Cluster) {
			c.CircuitBreakers = &cluster.CircuitBreakers{Thresholds: []*cluster.CircuitBreakers_Thresholds{{Priority: core.RoutingPriority_HIGH}}}
		}, "cluster c.circuit_breakers.thresholds[0].priority HIGH", ErrUnsupported},
		{cluster.Cluster_ROUND_ROBIN, func(c *cluster.Cluster) {
			c.CircuitBreakers = &cluster.CircuitBreakers{Thresholds: []*cluster.CircuitBreakers_Thresholds{{}, {}}}
		}, "cluster c.circuit_breakers.thresholds[1]: a second threshold", ErrInvalid},
		{cluster.Cluster_ROUND_ROBIN, func(c *cluster.Cluster) {
			c.CircuitBreakers = &cluster.CircuitBreakers{Thresholds: []*cluster.CircuitBreakers_Thresholds{{TrackRemaining: true}}}
		}, "cluster c.circuit_breakers.thresholds[0].track_remaining", ErrUnsupported},
		{cluster.Cluster_ROUND_ROBIN, func(c *cluster.Cluster) {
			c.CircuitBreakers = &cluster.CircuitBreakers{Thresholds: []*cluster.CircuitBreakers_Thresholds{{MaxConnectionPools: wrapperspb.UInt32(1)}}}
		}, "cluster c.circuit_breakers.thresholds[0].max_connection_pools", ErrUnsupported},
		{cluster.Cluster_ROUND_ROBIN, func(c *cluster.Cluster) {
			c.CircuitBreakers = &cluster.CircuitBreakers{PerHostThresholds: []*cluster.CircuitBreakers_Thresholds{{}}}
		}, "cluster c.circuit_breakers.per_host_thresholds", ErrUnsupported},
		{cluster.Cluster_ROUND_ROBIN, func(c *cluster.Cluster) {
			c.CircuitBreakers = &cluster.CircuitBreakers{Thresholds: []*cluster.CircuitBreakers_Thresholds{{
				RetryBudget: &cluster.CircuitBreakers_Thresholds_RetryBudget{BudgetPercent: &typev3.Percent{Value: 101}}}}}
		}, "cluster c.circuit_breakers.thresholds[0].retry_budget.budget_percent 101", ErrInvalid},
		{cluster.Cluster_ROUND_ROBIN, func(c *cluster.Cluster) {
			c.OutlierDetection = &cluster.OutlierDetection{SuccessRateMinimumHosts: wrapperspb.UInt32(3)}
		}, "cluster c.outlier_detection.success_rate_minimum_hosts", ErrUnsupported},
		{cluster.Cluster_ROUND_ROBIN, func(c *cluster.Cluster) {
			c.OutlierDetection = &cluster.OutlierDetection{FailurePercentageThreshold: wrapperspb.UInt32(3)}
		}, "cluster c.outlier_detection.failure_percentage_threshold", ErrUnsupported},
		{cluster.Cluster_ROUND_ROBIN, func(c *cluster.Cluster) {
			c.OutlierDetection = &cluster.OutlierDetection{EnforcingSuccessRate: wrapperspb.UInt32(100)}
		}, "cluster c.outlier_detection.enforcing_success_rate 100", ErrUnsupported},
		{cluster.Cluster_ROUND_ROBIN, func(c *cluster.Cluster) {
			c.OutlierDetection = &cluster.OutlierDetection{SuccessfulActiveHealthCheckUnejectHost: wrapperspb.Bool(true)}
		}, "cluster c.outlier_detection.successful_active_health_check_uneject_host", ErrUnsupported},
		{cluster.Cluster_ROUND_ROBIN, func(c *cluster.Cluster) {
			c.OutlierDetection = &cluster.OutlierDetection{DetectDegradedHosts: wrapperspb.Bool(true)}
		}, "cluster c.outlier_detection.detect_degraded_hosts", ErrUnsupported},
		{cluster.Cluster_ROUND_ROBIN, func(c *cluster.Cluster) {
			c.OutlierDetection = &cluster.OutlierDetection{MaxEjectionPercent: wrapperspb.UInt32(150)}
		}, "cluster c.outlier_detection.max_ejection_percent 150", ErrInvalid},
		{cluster.Cluster_ROUND_ROBIN, func(c *cluster.Cluster) {
			c.OutlierDetection = &cluster.OutlierDetection{EnforcingConsecutive_5Xx: wrapperspb.UInt32(101)}
		}, "cluster c.outlier_detection.enforcing_consecutive_5xx 101", ErrInvalid},
		{cluster.Cluster_ROUND_ROBIN, func(c *cluster.Cluster) {
			c.OutlierDetection = &cluster.OutlierDetection{Interval: durationpb.New(0)}
		}, "cluster c.outlier_detection.interval must be positive", ErrInvalid},
		{cluster.Cluster_ROUND_ROBIN, func(c *cluster.Cluster) {
			c.OutlierDetection = &cluster.OutlierDetection{BaseEjectionTime: durationpb.New(time.Minute), MaxEjectionTime: durationpb.New(time.Second)}
		}, "cluster c.outlier_detection.max_ejection_time 1s is shorter than base_ejection_time 1m0s", ErrInvalid},
	} {
		c := policyCluster(tc.lb, equalEps(1)...)
		tc.set(c)
		_, err := parseCluster(c)
		if err == nil || !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want %v naming %q", err, tc.err, tc.want)
		}
	}
}
