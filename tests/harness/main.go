// Command kube-harness is a busybox-style binary holding a small but real
// Kubernetes control plane for the settings-controller tests: embedded etcd,
// kube-apiserver, kube-controller-manager and kubectl, all from one module
// graph (k8s.io/kubernetes and its staging modules at one version).
//
// Invoked as "kubectl" (e.g. through a symlink) it is kubectl. Otherwise the
// first argument selects a subcommand:
//
//	kube-harness serve ...                    supervise etcd, apiserver, controller-manager
//	kube-harness pki --dir DIR                generate CA, serving cert and service-account keys
//	kube-harness etcd ...                     embedded etcd
//	kube-harness kube-apiserver FLAGS...      upstream kube-apiserver command
//	kube-harness kube-controller-manager ...  upstream kube-controller-manager command
//	kube-harness kubectl ARGS...              upstream kubectl
//	kube-harness version
//
// tests/harness/controlplane.py drives it; see tests/harness/README.md.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	_ "time/tzdata"

	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserverapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
	kcmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"

	// client auth plugins, as the upstream kubectl binary has them
	_ "k8s.io/client-go/plugin/pkg/client/auth"
)

func main() {
	if name := strings.TrimSuffix(filepath.Base(os.Args[0]), ".exe"); name == "kubectl" {
		runKubectl()
		return
	}
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	sub := os.Args[1]
	// Every subcommand sees itself as argv[0], like a standalone binary.
	os.Args = append([]string{sub}, os.Args[2:]...)
	switch sub {
	case "kubectl":
		runKubectl()
	case "kube-apiserver":
		os.Exit(cli.Run(apiserverapp.NewAPIServerCommand()))
	case "kube-controller-manager":
		os.Exit(cli.Run(kcmapp.NewControllerManagerCommand()))
	case "etcd":
		os.Exit(runEtcd(os.Args[1:]))
	case "pki":
		os.Exit(runPKI(os.Args[1:]))
	case "serve":
		os.Exit(runServe(os.Args[1:]))
	case "kstatus", "lua", "flux-cel":
		os.Exit(runHealth(sub, os.Args[1:]))
	case "version":
		printVersions()
	case "-h", "--help", "help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "kube-harness: unknown subcommand %q\n", sub)
		usage()
		os.Exit(2)
	}
}

func runKubectl() {
	logs.GlogSetter(kubectlcmd.GetLogVerbosity(os.Args)) //nolint:errcheck
	command := kubectlcmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		kubectlutil.CheckErr(err)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: kube-harness serve|pki|etcd|kube-apiserver|kube-controller-manager|kubectl|version [flags]")
}

func printVersions() {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		fmt.Println("no build info")
		return
	}
	fmt.Printf("go %s\n", info.GoVersion)
	for _, dep := range info.Deps {
		switch dep.Path {
		case "k8s.io/kubernetes", "go.etcd.io/etcd/server/v3", "k8s.io/kubectl":
			fmt.Printf("%s %s\n", dep.Path, dep.Version)
		}
	}
}
