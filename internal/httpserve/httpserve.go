// Package httpserve runs shoal's HTTP servers (the API socket, the
// registry, the health and metrics listener) for as long as their owner's
// context lives.
package httpserve

import (
	"context"
	"net"
	"net/http"
	"time"
)

// shutdownGrace is how long requests in flight get once the context ends.
const shutdownGrace = 5 * time.Second

// Until serves l until ctx ends, then shuts srv down, giving requests in
// flight a few seconds.
func Until(ctx context.Context, srv *http.Server, l net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
		<-errc
		return nil
	}
}
