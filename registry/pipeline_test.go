package registry

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// headerLog records the Authorization header of each request a server got.
type headerLog struct {
	mu   sync.Mutex
	auth []string
}

func (l *headerLog) add(r *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.auth = append(l.auth, r.Header.Get("Authorization"))
}

func (l *headerLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.auth...)
}

// TestAuthGuard checks that Authorization follows a redirect on the same
// host:port and is dropped on one to another port of the same hostname,
// where Go alone would keep it.
func TestAuthGuard(t *testing.T) {
	var storageLog, registryLog headerLog
	storage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		storageLog.add(r)
	}))
	defer storage.Close()
	registry := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		registryLog.add(r)
		switch r.URL.Path {
		case "/away":
			http.Redirect(w, r, storage.URL+"/blob", http.StatusTemporaryRedirect)
		case "/here":
			http.Redirect(w, r, "/blob", http.StatusTemporaryRedirect)
		}
	}))
	defer registry.Close()
	hc := &http.Client{Transport: &authGuard{next: http.DefaultTransport}}
	for _, tt := range []struct {
		path                   string
		wantRegistry, wantStor []string
	}{
		{"/away", []string{"Token t"}, []string{""}},
		{"/here", []string{"Token t", "Token t"}, nil},
	} {
		registryLog, storageLog = headerLog{}, headerLog{}
		req, _ := http.NewRequest(http.MethodGet, registry.URL+tt.path, nil)
		req.Header.Set("Authorization", "Token t")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tt.path, err)
		}
		drain(resp)
		if got := registryLog.get(); !slices.Equal(got, tt.wantRegistry) {
			t.Errorf("%s: registry got Authorization %q, want %q", tt.path, got, tt.wantRegistry)
		}
		if got := storageLog.get(); !slices.Equal(got, tt.wantStor) {
			t.Errorf("%s: storage got Authorization %q, want %q", tt.path, got, tt.wantStor)
		}
	}
}

// TestRetryFailover checks that a failing host is tried once per round and
// that the next request starts at the host that answered.
func TestRetryFailover(t *testing.T) {
	var mu sync.Mutex
	hits := map[string]int{}
	count := func(name string, status int) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			hits[name]++
			mu.Unlock()
			w.WriteHeader(status)
		})
	}
	bad := httptest.NewServer(count("bad", http.StatusServiceUnavailable))
	defer bad.Close()
	good := httptest.NewServer(count("good", http.StatusOK))
	defer good.Close()
	f := &failover{hosts: []string{bad.Listener.Addr().String(), good.Listener.Addr().String()}}
	quiet := logrus.New()
	quiet.SetLevel(logrus.PanicLevel)
	rt := &retryTransport{
		next:     http.DefaultTransport,
		policy:   retryPolicy{rounds: 3, backoffMin: time.Millisecond, backoffMax: time.Millisecond, retryAfterMax: time.Second},
		failover: f,
		log:      logrus.NewEntry(quiet),
	}
	for i := 0; i < 3; i++ {
		resp, err := send(context.Background(), rt, http.MethodGet, bad.URL+"/x", nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		drain(resp)
	}
	if hits["bad"] != 1 || hits["good"] != 3 {
		t.Errorf("hits: got %v, want bad 1, good 3", hits)
	}
	if got := f.good.Load(); got != 1 {
		t.Errorf("host that answered last: got %d, want 1", got)
	}
}
