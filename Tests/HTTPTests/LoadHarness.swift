import Foundation
import HTTP
import Testing

/// Not a timed test: serves tiny responses on HTTP_LOAD_PORT for HTTP_LOAD_SECONDS so an external
/// load generator can measure throughput, e.g.
/// `HTTP_LOAD_PORT=18080 HTTP_LOAD_SECONDS=20 swift test -c release --filter loadHarness &`
/// then `wrk -t2 -c16 -d10s http://127.0.0.1:18080/health`. Skipped unless HTTP_LOAD_PORT is set.
@Test(.enabled(if: ProcessInfo.processInfo.environment["HTTP_LOAD_PORT"] != nil))
func loadHarness() throws {
    let environment = ProcessInfo.processInfo.environment
    let port = try #require(environment["HTTP_LOAD_PORT"].flatMap(Int.init))
    let seconds = environment["HTTP_LOAD_SECONDS"].flatMap(Double.init) ?? 20
    let server = HTTPServer(
        configuration: HTTPServerConfiguration(host: "127.0.0.1", port: port, maxConnections: 256)
    ) { _, responder in
        responder.send(HTTPResponse(contentType: "application/json", body: "{\"status\":\"ok\"}"))
    }
    try server.start()
    Thread.sleep(forTimeInterval: seconds)
    server.shutdown(drainDeadline: .seconds(2))
    #expect(server.openConnectionCount == 0)
}
