package fs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/regfs/regfs/registry"
)

func TestToErrno(t *testing.T) {
	log := quietLog()
	tests := []struct {
		err  error
		want syscall.Errno
	}{
		{nil, 0},
		{fmt.Errorf("resolve x: %w", registry.ErrNotFound), syscall.ENOENT},
		{fmt.Errorf("open: %w", fs.ErrNotExist), syscall.ENOENT},
		{fmt.Errorf("tags: %w", registry.ErrUnauthorized), syscall.EACCES},
		{fmt.Errorf("wait: %w", context.Canceled), syscall.EINTR},
		{fmt.Errorf("fetch: %w", context.DeadlineExceeded), syscall.EIO},
		{fmt.Errorf("x: %w", syscall.ENOTDIR), syscall.ENOTDIR},
		{errors.New("connection reset"), syscall.EIO},
		// The socket's errno inside a network error is no file's errno.
		{fmt.Errorf("blob at 0: %w", &url.Error{Op: "Get", URL: "http://r/v2/", Err: &net.OpError{
			Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}), syscall.EIO},
		{fmt.Errorf("read: %w", &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}), syscall.EIO},
		{fmt.Errorf("dial: %w", refusedDial(t)), syscall.EIO},
	}
	for _, tc := range tests {
		if got := toErrno(log, "op", "/p", tc.err); got != tc.want {
			t.Errorf("toErrno(%v): got %v, want %v", tc.err, got, tc.want)
		}
	}
}

// refusedDial is the error of a real dial to a port nobody listens on.
func refusedDial(t *testing.T) error {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c, err := net.Dial("tcp", addr)
	if err == nil {
		c.Close()
		t.Skip("a closed port accepted a connection")
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Skipf("dial of a closed port: got %v, want ECONNREFUSED", err)
	}
	return err
}

func TestMetaCacheTTL(t *testing.T) {
	c := newMemClient()
	small := c.addImage(t, "test/small", "latest", amd64, []testFile{{name: "a", body: "a"}})
	m := newMetaCache(c, time.Minute, time.Minute)
	now := time.Unix(1000, 0)
	m.now = func() time.Time { return now }
	ctx := context.Background()
	steps := []struct {
		name         string
		advance      time.Duration
		ref          string
		wantResolves int64
	}{
		{"first by tag", 0, "latest", 1},
		{"again within TTL", 30 * time.Second, "latest", 1},
		{"after TTL", 31 * time.Second, "latest", 2},
		{"by digest", 0, small.img.ManifestDigest.String(), 3},
		{"by digest much later", 100 * time.Hour, small.img.ManifestDigest.String(), 3},
		{"unknown tag", 0, "nosuch", 4},
		{"unknown tag again: negative answer kept", time.Second, "nosuch", 4},
		{"unknown tag after TTL", time.Minute, "nosuch", 5},
	}
	for _, s := range steps {
		now = now.Add(s.advance)
		m.Resolve(ctx, "test/small", s.ref, amd64)
		if got := c.resolves.Load(); got != s.wantResolves {
			t.Errorf("%s: got %d resolves, want %d", s.name, got, s.wantResolves)
		}
	}
}

func TestMetaCacheSharesFetches(t *testing.T) {
	c := newMemClient()
	c.addImage(t, "test/small", "latest", amd64, []testFile{{name: "a", body: "a"}})
	slow := &slowClient{memClient: c, release: make(chan struct{})}
	m := newMetaCache(slow, time.Minute, time.Minute)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := m.Tags(context.Background(), "test/small"); err != nil {
				t.Errorf("tags: %v", err)
			}
		}()
	}
	// A caller interrupted while waiting stops waiting; the others still get
	// the shared answer.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Tags(ctx, "test/small"); !errors.Is(err, context.Canceled) {
		t.Errorf("interrupted caller: got %v, want context.Canceled", err)
	}
	time.Sleep(50 * time.Millisecond)
	close(slow.release)
	wg.Wait()
	if got := c.tagCalls.Load(); got != 1 {
		t.Errorf("concurrent Tags: got %d registry calls, want 1", got)
	}
}

type slowClient struct {
	*memClient
	release chan struct{}
}

func (s *slowClient) Tags(ctx context.Context, repo string) ([]string, error) {
	<-s.release
	return s.memClient.Tags(ctx, repo)
}

func TestParseImageName(t *testing.T) {
	d := "sha256:" + fmt.Sprintf("%064x", 1)
	tests := []struct {
		name string
		want imageName
		ok   bool
	}{
		{"busybox:latest", imageName{"busybox", "latest", false}, true},
		{"my-repo:v1.2_3", imageName{"my-repo", "v1.2_3", false}, true},
		{"busybox@" + d, imageName{"busybox", d, true}, true},
		{"busybox", imageName{}, false},
		{"busybox:", imageName{}, false},
		{"Busybox:latest", imageName{}, false},
		{"busybox:.bad", imageName{}, false},
		{"busybox@sha256:abc", imageName{}, false},
		{":latest", imageName{}, false},
	}
	for _, tc := range tests {
		got, ok := parseImageName(tc.name)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("parseImageName(%q): got %+v %v, want %+v %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}
