package layercache

import "sync/atomic"

// Stats is a snapshot of the cache's counters; it is printed as JSON in
// `.regfs/stats`. Block counts are per block, byte counts are payload bytes.
type Stats struct {
	SourceRequests   int64 `json:"source_requests"`   // ranged reads sent to Sources
	SourceErrors     int64 `json:"source_errors"`     // of which failed or came back short
	BytesFetched     int64 `json:"bytes_fetched"`     // bytes received from Sources
	BytesServed      int64 `json:"bytes_served"`      // bytes returned by Reader.ReadAt
	InFlightFetches  int64 `json:"in_flight_fetches"` // Source reads running now
	SharedWaits      int64 `json:"shared_waits"`      // block misses that joined a fetch already in flight
	ReadaheadFetches int64 `json:"readahead_fetches"` // Source reads started by readahead

	Memory MemoryStats `json:"memory"`
	Disk   DiskStats   `json:"disk"`
}

// MemoryStats describes the memory tier.
type MemoryStats struct {
	Hits       int64 `json:"hits"`
	Misses     int64 `json:"misses"`
	Evictions  int64 `json:"evictions"`
	Blocks     int64 `json:"blocks"`
	Bytes      int64 `json:"bytes"`
	LimitBytes int64 `json:"limit_bytes"`
}

// DiskStats describes the disk tier; all zero when there is none.
type DiskStats struct {
	Dir         string `json:"dir,omitempty"`
	Hits        int64  `json:"hits"`
	Misses      int64  `json:"misses"`
	Evictions   int64  `json:"evictions"`
	Writes      int64  `json:"writes"`
	WriteErrors int64  `json:"write_errors"`
	Corrupt     int64  `json:"corrupt"` // files found torn or garbled, removed
	Files       int64  `json:"files"`   // blocks and PutFile files known to this Cache
	Bytes       int64  `json:"bytes"`   // their size on disk
	LimitBytes  int64  `json:"limit_bytes"`
}

// counters are the scheduler's share of Stats; the tiers count their own.
type counters struct {
	sourceRequests, sourceErrors, bytesFetched atomic.Int64
	inFlight, sharedWaits, readaheadFetches    atomic.Int64
	memMisses                                  atomic.Int64
}
