// Command etcd runs an etcd server for the Kubernetes end-to-end test: one
// member, its data in --data-dir, clients on --listen-client-urls, from
// go.etcd.io/etcd's embedded server, so that no etcd release is needed.
package main

import (
	"flag"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	dataDir := flag.String("data-dir", "etcd-data", "where etcd keeps its data")
	clients := flag.String("listen-client-urls", "http://127.0.0.1:2379", "where clients reach etcd")
	peers := flag.String("listen-peer-urls", "http://127.0.0.1:2380", "where members reach each other")
	flag.Parse()
	cfg := embed.NewConfig()
	cfg.Dir = *dataDir
	cu, err := url.Parse(*clients)
	if err != nil {
		log.Fatal(err)
	}
	pu, err := url.Parse(*peers)
	if err != nil {
		log.Fatal(err)
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	cfg.LogLevel = "error"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer e.Close()
	<-e.Server.ReadyNotify()
	log.Printf("etcd ready on %s", cu)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	select {
	case <-stop:
	case err := <-e.Err():
		log.Fatal(err)
	}
}
