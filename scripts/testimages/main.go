// Command testimages pushes regfs's standard test images to a running
// registry, or runs the in-process reference registry in the foreground, so
// the demo and benchmark scripts need no separately installed binary.
//
//	go run ./scripts/testimages -registry 127.0.0.1:5000 [-large-mb N] [-no-large] [-user U -pass P]
//	go run ./scripts/testimages -serve 127.0.0.1:5000 -dir DIR [-push] [-auth htpasswd|token -user U -pass P]
//
// With -serve it runs until SIGINT/SIGTERM; with -push it also pushes the
// fixtures into the registry it serves once it is up.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"

	"github.com/regfs/regfs/registry/registrytest"
)

func main() {
	var (
		target  = flag.String("registry", "", "push the fixtures to this registry host:port")
		serve   = flag.String("serve", "", "run a reference registry on this host:port in the foreground")
		dir     = flag.String("dir", "", "storage directory of the served registry (default: a temporary one, removed on exit)")
		push    = flag.Bool("push", false, "with -serve: push the fixtures once the registry is up")
		largeMB = flag.Int64("large-mb", registrytest.DefaultLargeSize>>20, "content size of test/large in MiB")
		noLarge = flag.Bool("no-large", false, "leave test/large out")
		auth    = flag.String("auth", "none", "with -serve: none, htpasswd or token")
		user    = flag.String("user", "", "user name (auth of the served registry, or credentials for -registry)")
		pass    = flag.String("pass", "", "password")
		verbose = flag.Bool("v", false, "with -serve: show the registry's request logs")
	)
	flag.Parse()
	if (*target == "") == (*serve == "") {
		fmt.Fprintln(os.Stderr, "testimages: give exactly one of -registry or -serve")
		flag.Usage()
		os.Exit(2)
	}
	fixtureOpts := []registrytest.FixtureOption{registrytest.WithLargeSize(*largeMB << 20)}
	if *noLarge {
		fixtureOpts = append(fixtureOpts, registrytest.WithoutLarge())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var err error
	if *target != "" {
		var creds *registrytest.Credentials
		if *user != "" {
			creds = &registrytest.Credentials{User: *user, Password: *pass}
		}
		err = pushTo(ctx, *target, creds, fixtureOpts)
	} else {
		err = runServer(ctx, *serve, *dir, *auth, *user, *pass, *verbose, *push, fixtureOpts)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testimages:", err)
		os.Exit(1)
	}
}

func pushTo(ctx context.Context, host string, creds *registrytest.Credentials, opts []registrytest.FixtureOption) error {
	start := time.Now()
	f, err := registrytest.PushFixturesTo(ctx, registrytest.NewPusherFor(host, creds), host, opts...)
	if err != nil {
		return err
	}
	refs := make([]string, 0, len(f.Images)+len(f.Indexes))
	for ref, img := range f.Images {
		if img == f.Paging {
			continue // one line for all its tags, below
		}
		refs = append(refs, fmt.Sprintf("%s/%s %s", host, ref, img.Digest))
	}
	pagingTags := f.Tags(registrytest.RepoPaging)
	if len(pagingTags) > 0 {
		refs = append(refs, fmt.Sprintf("%s/%s:{%s…%s} %s (%d tags)", host, registrytest.RepoPaging,
			pagingTags[0], pagingTags[len(pagingTags)-1], f.Paging.Digest, len(pagingTags)))
	}
	for ref, idx := range f.Indexes {
		refs = append(refs, fmt.Sprintf("%s/%s %s (index)", host, ref, idx.Digest))
	}
	sort.Strings(refs)
	for _, r := range refs {
		fmt.Println(r)
	}
	if f.Large != nil {
		l := f.Large.Layers[0]
		fmt.Printf("large layer: %s, %d bytes compressed, %d uncompressed\n", l.Digest, l.Size, l.UncompressedSize)
	}
	fmt.Fprintf(os.Stderr, "pushed %d references in %v\n", len(refs), time.Since(start).Round(time.Millisecond))
	return nil
}

func runServer(ctx context.Context, addr, dir, auth, user, pass string, verbose, push bool, opts []registrytest.FixtureOption) error {
	cfg := registrytest.Config{Addr: addr, Dir: dir, LogRequests: verbose}
	switch auth {
	case "none", "":
	case "htpasswd":
		cfg.Htpasswd = &registrytest.Credentials{User: user, Password: pass}
	case "token":
		cfg.Token = &registrytest.TokenConfig{User: user, Password: pass}
	default:
		return fmt.Errorf("unknown -auth %q (none, htpasswd, token)", auth)
	}
	if cfg.Htpasswd != nil || cfg.Token != nil {
		if user == "" {
			return fmt.Errorf("-auth %s needs -user and -pass", auth)
		}
	}
	reg, err := registrytest.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer reg.Close()
	fmt.Printf("registry listening on %s (storage %s)\n", reg.URL, reg.Dir)
	if push {
		if err := pushTo(ctx, reg.Host, reg.Credentials, opts); err != nil {
			return err
		}
	}
	<-ctx.Done()
	st := reg.Stats()
	fmt.Fprintf(os.Stderr, "stopping: %v\n", st)
	return reg.Close()
}
