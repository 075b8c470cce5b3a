import Foundation
import HTTP
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// HTTPS through OpenSSL (certificates made with the openssl CLI), handshakes that never block
/// other clients, start-up errors for bad files, and idle connections that hold no thread.
@Suite(.serialized) struct TLSServerTests {
    /// A temporary directory with a self-signed certificate for localhost/127.0.0.1 and its key,
    /// plus a second, unrelated key.
    final class Certificates {
        let directory: URL
        var certificate: String { directory.appendingPathComponent("cert.pem").path }
        var key: String { directory.appendingPathComponent("key.pem").path }
        var otherKey: String { directory.appendingPathComponent("other-key.pem").path }

        init() throws {
            directory = FileManager.default.temporaryDirectory.appendingPathComponent("castserve-tls-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            try Certificates.openssl([
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-keyout", directory.appendingPathComponent("key.pem").path, "-out", directory.appendingPathComponent("cert.pem").path,
            ])
            try Certificates.openssl([
                "genpkey", "-algorithm", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-out", directory.appendingPathComponent("other-key.pem").path,
            ])
        }

        deinit { try? FileManager.default.removeItem(at: directory) }

        static func openssl(_ arguments: [String]) throws {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
            process.arguments = arguments
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            process.waitUntilExit()
            #expect(process.terminationStatus == 0, "openssl \(arguments.joined(separator: " "))")
        }
    }

    func startTLSServer(
        _ certificates: Certificates, handshakeTimeout: Duration = .seconds(5),
        eventSink: (@Sendable (HTTPServerEvent) -> Void)? = nil
    ) throws -> HTTPServer {
        let configuration = HTTPServerConfiguration(
            host: "127.0.0.1", port: 0, maxConnections: 64, headerReadTimeout: .seconds(2), bodyReadTimeout: .seconds(2),
            idleKeepAliveTimeout: .seconds(5), writeTimeout: .seconds(2),
            tls: TLSConfiguration(certificatePath: certificates.certificate, privateKeyPath: certificates.key,
                                  handshakeTimeout: handshakeTimeout))
        let big = Data((0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) })
        let handler = HTTPClosureHandler { request, responder in
            guard request.path == "/big" else { return echoHandler(request, responder) }
            // 3 MB through SSL_write on a non-blocking socket: partial writes and WANT_WRITE.
            responder.send(HTTPResponse(headers: ["Content-Type": "application/octet-stream"], body: big))
        }
        let server = HTTPServer(configuration: configuration, handler: handler, eventSink: eventSink)
        try server.start()
        return server
    }

    // MARK: - Start-up errors

    @Test func badCertificateOrKeyFilesAreTypedErrorsNamingTheFile() throws {
        let certificates = try Certificates()
        func startError(certificate: String, key: String) -> HTTPServerError? {
            let server = HTTPServer(
                configuration: HTTPServerConfiguration(
                    host: "127.0.0.1", port: 0, tls: TLSConfiguration(certificatePath: certificate, privateKeyPath: key)),
                handler: HTTPClosureHandler(echoHandler))
            do {
                try server.start()
                server.shutdown(drainDeadline: .seconds(1))
                return nil
            } catch {
                return error
            }
        }
        let missing = certificates.directory.appendingPathComponent("missing.pem").path
        guard case .tlsFileUnreadable(let role, let path, _) = startError(certificate: missing, key: certificates.key) else {
            Issue.record("missing certificate accepted")
            return
        }
        #expect(role == "certificate" && path == missing)
        guard case .tlsCertificateInvalid(let notCert, _) = startError(certificate: certificates.key, key: certificates.key) else {
            Issue.record("a key file was accepted as a certificate")
            return
        }
        #expect(notCert == certificates.key)
        guard case .tlsPrivateKeyInvalid(let notKey, _) = startError(certificate: certificates.certificate, key: certificates.certificate)
        else {
            Issue.record("a certificate was accepted as a key")
            return
        }
        #expect(notKey == certificates.certificate)
        let mismatch = startError(certificate: certificates.certificate, key: certificates.otherKey)
        #expect(mismatch == .tlsKeyMismatch(certificatePath: certificates.certificate, privateKeyPath: certificates.otherKey))
        #expect(mismatch?.description.contains("does not belong to certificate") == true)
        #expect(startError(certificate: certificates.certificate, key: certificates.key) == nil)
    }

    // MARK: - Serving

    @Test func curlOverHTTPSReusesTheConnectionAndUploads() throws {
        let certificates = try Certificates()
        let server = try startTLSServer(certificates)
        defer { server.shutdown(drainDeadline: .seconds(1)) }
        let base = "https://localhost:\(server.port)"
        let two = try runCurl(["--cacert", certificates.certificate, "-w", " connects=%{num_connects}\n", "\(base)/a", "\(base)/b"])
        #expect(two.0 == 0)
        #expect(two.1 == "GET /a 0 connects=1\nGET /b 0 connects=0\n")
        let file = certificates.directory.appendingPathComponent("upload.bin")
        try Data(count: 200_000).write(to: file)
        let upload = try runCurl(["--cacert", certificates.certificate, "--data-binary", "@\(file.path)", "\(base)/up"])
        #expect(upload.1 == "POST /up 200000")
        let big = certificates.directory.appendingPathComponent("big.bin")
        let download = try runCurl(["--cacert", certificates.certificate, "-o", big.path, "-w", "%{size_download}", "\(base)/big"])
        #expect(download.1 == "3000000")
        #expect(try Data(contentsOf: big) == Data((0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }))
        let insecure = try runCurl(["\(base)/a"])
        #expect(insecure.0 != 0, "curl must reject the self-signed certificate without --cacert")
    }

    @Test func stalledHandshakeNeitherBlocksOthersNorLivesPastItsTimeout() throws {
        let certificates = try Certificates()
        let events = Box<[String]>([])
        let server = try startTLSServer(certificates, handshakeTimeout: .seconds(3)) { event in
            if case .tlsHandshakeFailed(let reason) = event { events.update { $0.append(reason) } }
        }
        defer { server.shutdown(drainDeadline: .seconds(1)) }
        let stalled = try RawClient(port: server.port)  // connects and never sends a ClientHello
        let half = try RawClient(port: server.port)
        half.send([0x16, 0x03, 0x01, 0x00, 0xC8])  // a record header promising 200 bytes that never come
        let clock = ContinuousClock()
        let started = clock.now
        let served = try runCurl(["--cacert", certificates.certificate, "https://localhost:\(server.port)/other"])
        #expect(served.1 == "GET /other 0")
        // Served well before the stalled handshakes time out (3 s): not queued behind them. The
        // margin covers starting curl on a slow, busy host.
        #expect(clock.now - started < .milliseconds(2500), "the stalled handshakes delayed another client")
        #expect(stalled.isClosedByServer(timeout: 8))
        #expect(half.isClosedByServer(timeout: 8))
        #expect(events.get.filter { $0.contains("no TLS handshake within") }.count == 2)
    }

    @Test func plainHTTPOnTheTLSPortGets400AndTheServerGoesOn() throws {
        let certificates = try Certificates()
        let server = try startTLSServer(certificates)
        defer { server.shutdown(drainDeadline: .seconds(1)) }
        let client = try RawClient(port: server.port)
        client.send("GET /plain HTTP/1.1\r\nHost: t\r\n\r\n")
        let response = try client.readResponse()
        #expect(response.statusCode == 400)
        #expect(response.text.contains("this port speaks HTTPS"))
        #expect(client.isClosedByServer(timeout: 3))
        let garbage = try RawClient(port: server.port)
        garbage.send([0x00, 0x01, 0x02])
        #expect(garbage.isClosedByServer(timeout: 3))
        #expect(try runCurl(["--cacert", certificates.certificate, "https://localhost:\(server.port)/after"]).1 == "GET /after 0")
    }

    // MARK: - Idle connections

    /// Threads of this process (the test runner and the server share it).
    static func threadCount() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").count) ?? 0
    }

    @Test func idleKeepAliveConnectionsHoldNoThread() throws {
        let server = try startTestServer({ $0.maxConnections = 400; $0.idleKeepAliveTimeout = .seconds(30) }, handler: echoHandler)
        defer { server.shutdown(drainDeadline: .seconds(1)) }
        let before = Self.threadCount()
        var clients: [RawClient] = []
        for i in 0..<300 {
            let client = try RawClient(port: server.port)
            client.send("GET /c\(i) HTTP/1.1\r\nHost: t\r\n\r\n")
            #expect(try client.readResponse().text == "GET /c\(i) 0")
            clients.append(client)
        }
        usleep(200_000)  // serving threads that just parked their connection exit
        #expect(server.openConnectionCount == 300)
        let during = Self.threadCount()
        #expect(during < before + 20, "threads: \(before) before, \(during) with 300 idle connections")
        // The parked connections still serve, in any order.
        for i in stride(from: 299, through: 0, by: -37) {
            clients[i].send("GET /again\(i) HTTP/1.1\r\nHost: t\r\n\r\n")
            #expect(try clients[i].readResponse().text == "GET /again\(i) 0")
        }
    }

    @Test func descriptorLimitIsRaisedToTheHardLimit() {
        let limit = FileDescriptorLimit.raiseToHardLimit()
        #expect(limit.hard > 0)
        #expect(limit.soft >= limit.previousSoft)
        if limit.failure == nil {
            #expect(limit.soft == limit.hard || limit.soft == 1 << 20, "soft \(limit.soft), hard \(limit.hard)")
            var current = rlimit()
            getrlimit(Int32(RLIMIT_NOFILE.rawValue), &current)
            #expect(Int(clamping: current.rlim_cur) == limit.soft)
        }
        #expect(FileDescriptorLimit.needed(connections: 1000) == 3064)
        // Raising again changes nothing.
        let again = FileDescriptorLimit.raiseToHardLimit()
        #expect(again.previousSoft == limit.soft && again.soft == limit.soft)
    }
}
