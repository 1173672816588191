package relay

import "sync/atomic"

// Stats counts what a relay did. The zero value is ready; fields are
// updated atomically while the relay runs.
type Stats struct {
	Accepted    atomic.Uint64 // TCP connections accepted
	Relayed     atomic.Uint64 // TCP flows connected to a backend
	Intercepted atomic.Uint64 // of those, flows copied through a Hook
	Active      atomic.Int64  // TCP flows open now
	Rejected    atomic.Uint64 // no route admits the name
	Malformed   atomic.Uint64 // first bytes could not be routed
	Silent      atomic.Uint64 // no routable bytes within first_data
	BackendFail atomic.Uint64 // backend connection attempts that failed
	Failed      atomic.Uint64 // flows no backend accepted
	Resets      atomic.Uint64 // flows ended by a reset (either side, or an error)
	Idle        atomic.Uint64 // flows reset after the idle timeout
	ToBackend   atomic.Uint64 // bytes copied client -> backend
	ToClient    atomic.Uint64 // bytes copied backend -> client

	Datagrams   atomic.Uint64 // UDP datagrams from clients relayed
	Replies     atomic.Uint64 // UDP datagrams from backends relayed
	Sessions    atomic.Int64  // UDP client sockets open now
	UDPDropped  atomic.Uint64 // UDP datagrams dropped (no route, full, errors)
	UDPRejected atomic.Uint64 // DNS queries answered REFUSED or FORMERR
}

// Map returns the counters by name, for an admin or metrics endpoint.
func (s *Stats) Map() map[string]int64 {
	return map[string]int64{
		"relay_accepted":     int64(s.Accepted.Load()),
		"relay_relayed":      int64(s.Relayed.Load()),
		"relay_intercepted":  int64(s.Intercepted.Load()),
		"relay_active":       s.Active.Load(),
		"relay_rejected":     int64(s.Rejected.Load()),
		"relay_malformed":    int64(s.Malformed.Load()),
		"relay_silent":       int64(s.Silent.Load()),
		"relay_backend_fail": int64(s.BackendFail.Load()),
		"relay_failed":       int64(s.Failed.Load()),
		"relay_resets":       int64(s.Resets.Load()),
		"relay_idle":         int64(s.Idle.Load()),
		"relay_to_backend":   int64(s.ToBackend.Load()),
		"relay_to_client":    int64(s.ToClient.Load()),
		"relay_datagrams":    int64(s.Datagrams.Load()),
		"relay_replies":      int64(s.Replies.Load()),
		"relay_sessions":     s.Sessions.Load(),
		"relay_udp_dropped":  int64(s.UDPDropped.Load()),
		"relay_udp_rejected": int64(s.UDPRejected.Load()),
	}
}
