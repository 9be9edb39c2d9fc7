package lazyfs

import "context"

// ServeOptions change Serve.
type ServeOptions struct {
	MountOptions
	// Rate fetches the rest of the image at this many bytes a second once
	// any prefetch is done (0: not).
	Rate int64
	// Report receives what fetching ahead did; nil discards it.
	Report func(format string, args ...any)
	// Mounted, if set, runs once the mount serves.
	Mounted func()
}

// Serve mounts im at dir and serves it, fetching ahead (FetchAhead) from
// store meanwhile, until ctx ends, when it unmounts, or until the mount
// is unmounted from outside (`shoal unmount`). Fetching ahead stops with
// it.
func Serve(ctx context.Context, dir string, im *Image, store Store, opts ServeOptions) error {
	opts.Stats = im.Stats
	srv, err := Mount(dir, im.Tree, opts.MountOptions)
	if err != nil {
		return err
	}
	if opts.Mounted != nil {
		opts.Mounted()
	}
	report := opts.Report
	if report == nil {
		report = func(string, ...any) {}
	}
	ahead, stop := context.WithCancel(ctx)
	fetching := make(chan struct{})
	go func() {
		defer close(fetching)
		im.FetchAhead(ahead, store, opts.Rate, report)
	}()
	served := make(chan struct{})
	go func() { srv.Wait(); close(served) }()
	select {
	case <-served: // unmounted from outside
	case <-ctx.Done():
		if err := srv.Unmount(); err != nil {
			_ = Unmount(dir)
		}
		<-served
	}
	stop()
	<-fetching
	return nil
}
