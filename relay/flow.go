package relay

import "net/netip"

// Direction is the way bytes travel through a flow.
type Direction uint8

// Directions.
const (
	// ToBackend is from the client to the backend.
	ToBackend Direction = iota
	// ToClient is from the backend to the client.
	ToClient
)

// String returns "to-backend" or "to-client".
func (d Direction) String() string {
	if d == ToBackend {
		return "to-backend"
	}
	return "to-client"
}

// Flow describes one relayed connection. It is read-only for interceptors.
type Flow struct {
	// Service is the name of the service the flow belongs to.
	Service string
	// Client is the client's address and port.
	Client netip.AddrPort
	// Asked is the address the client connected to: the listen address,
	// or in transparent mode the original destination.
	Asked netip.AddrPort
	// Backend is the backend the relay connected to.
	Backend netip.AddrPort
	// Name is the routing name the parser found ("" for none).
	Name string
}

// Interceptor sees the bytes of relayed TCP flows. It is called from many
// goroutines at once.
type Interceptor interface {
	// Open is called once per flow, after the backend is connected and
	// before any byte is copied. It returns the flow's Hook, or nil to
	// leave the flow alone (it is then copied with splice(2)).
	Open(f *Flow) Hook
}

// Hook sees the bytes of one flow. Chunk is called from two goroutines,
// one per direction; calls for one direction are sequential and in stream
// order.
type Hook interface {
	// Chunk is called with each chunk read from one side and returns the
	// bytes to write to the other side instead: chunk itself, part of it,
	// other memory, or nothing. chunk is only valid during the call, and
	// the returned slice only until the next call for that direction. The
	// first chunk toward the backend holds the client's first bytes (less
	// those the protocol consumed). An error resets both sides.
	Chunk(dir Direction, chunk []byte) ([]byte, error)
}

// HookFunc is a Hook that is a function.
type HookFunc func(dir Direction, chunk []byte) ([]byte, error)

// Chunk calls fn.
func (fn HookFunc) Chunk(dir Direction, chunk []byte) ([]byte, error) { return fn(dir, chunk) }

// InterceptorFunc is an Interceptor that is a function.
type InterceptorFunc func(f *Flow) Hook

// Open calls fn.
func (fn InterceptorFunc) Open(f *Flow) Hook { return fn(f) }
