@testable import MeshDaemon
import MeshLink
import NIOCore
import Testing

/// How the link layer's per-host rate limit sees a UDP source (docs/links.md, step 5).
@Suite struct SourceKeyTests {
    @Test func hostsAreCountedByIPv4AddressOrIPv6Slash64() throws {
        let v4 = try SocketAddress(ipAddress: "10.1.2.3", port: 4460)
        let otherPort = try SocketAddress(ipAddress: "10.1.2.3", port: 5000)
        #expect(v4.rateLimitKey == [10, 1, 2, 3])
        #expect(otherPort.rateLimitKey == v4.rateLimitKey, "the port is ignored")
        let v6 = try SocketAddress(ipAddress: "2001:db8:1:2:aaaa::1", port: 4460)
        let sameSlash64 = try SocketAddress(ipAddress: "2001:db8:1:2:bbbb::9", port: 4460)
        #expect(v6.rateLimitKey == [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2])
        #expect(sameSlash64.rateLimitKey == v6.rateLimitKey)
    }

    /// On a dual-stack socket IPv4 peers arrive as ::ffff:a.b.c.d; each counts as its own IPv4 host, not all of
    /// them as one ::ffff:0:0/64 (review finding).
    @Test func ipv4MappedSourcesCountAsTheirIPv4Address() throws {
        let mappedA = try SocketAddress(ipAddress: "::ffff:10.1.2.3", port: 4460)
        let mappedB = try SocketAddress(ipAddress: "::ffff:10.9.9.9", port: 4460)
        #expect(mappedA.rateLimitKey == [10, 1, 2, 3])
        #expect(mappedA.rateLimitKey != mappedB.rateLimitKey)
    }
}
