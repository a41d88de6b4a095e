// Command demoapp is the lab's demo application: one binary, three apps.
//
//	demoapp -app monolith -listen 127.0.0.1:9080 -host vm1 -orders http://orders.mesh:9081 -users http://users.mesh:9082
//	demoapp -app orders   -listen 127.0.0.1:9081 -host vm2 -monolith http://monolith.mesh:9080
//	demoapp -app users    -listen 127.0.0.1:9082 -host vm3 -monolith http://monolith.mesh:9080
//
// The monolith is the old application: one process serving /orders, /users
// and /inventory on one port. orders and users are the microservices being
// carved out of it. Each app calls the others by their mesh names, as an
// unmodified application would: /call/orders and /call/users on the
// monolith, /call/monolith (its /inventory) on the microservices. DNS gives
// the name's virtual IP, capture sends the connection into the host's
// proxy, and the proxy carries it over mTLS to the proxy of the host that
// runs the app, which hands it to the app on loopback.
//
// Every answer is one flat JSON object that says which app on which host
// answered and which peer address it saw, so lab/traffic.sh can print what
// went where with nothing more than sed: an app that listens on loopback
// and sees a loopback peer was reached through its host's proxy.
package main
