// swift-tools-version:6.0
import PackageDescription

// Hot loops are written with SIMD8<Float>; without a target CPU Swift compiles them for
// baseline x86-64 (SSE2, FMA as a libm call). Haswell (AVX2 + FMA, 2013 and later) is the floor
// for the machines cdtrainer runs on; release builds only, so debug builds stay portable.
// The numeric core is also optimized in debug builds: its loops run 50–100× slower at -Onone,
// which made the whole-model gradient tests take minutes; everything above it stays debuggable.
let debugOptimized: SwiftSetting = .unsafeFlags(["-O"], .when(configuration: .debug))
#if arch(x86_64)
let kernelFlags: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "haswell"], .when(configuration: .release))]
#else
let kernelFlags: [SwiftSetting] = []
#endif

let package = Package(
    name: "cdtrainer",
    products: [
        .library(name: "CDTensor", targets: ["CDTensor"]),
        .library(name: "CDModels", targets: ["CDModels"]),
        .library(name: "CDTraining", targets: ["CDTraining"]),
        .library(name: "CDImages", targets: ["CDImages"]),
        .library(name: "CDProtocol", targets: ["CDProtocol"]),
        .executable(name: "cdtrainerd", targets: ["cdtrainerd"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.0.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
    ],
    targets: [
        .systemLibrary(
            name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(
            name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi-c",
            providers: [.apt(["libopenmpi-dev", "openmpi-bin"])]),
        .systemLibrary(
            name: "CPNG", path: "Sources/CPNG", pkgConfig: "libpng",
            providers: [.apt(["libpng-dev"])]),
        .systemLibrary(
            name: "CJPEG", path: "Sources/CJPEG", pkgConfig: "libturbojpeg",
            providers: [.apt(["libturbojpeg0-dev"])]),
        .systemLibrary(
            name: "CWebP", path: "Sources/CWebP", pkgConfig: "libwebp",
            providers: [.apt(["libwebp-dev"])]),
        .target(name: "CDTensor", dependencies: ["COpenBLAS"], swiftSettings: kernelFlags + [debugOptimized]),
        .target(
            name: "CDModels", dependencies: ["CDTensor", "CPNG"],
            resources: [.copy("Resources/clip-merges.txt")], swiftSettings: kernelFlags),
        .target(name: "CDImages", dependencies: ["CPNG", "CJPEG", "CWebP"], swiftSettings: kernelFlags + [debugOptimized]),
        .target(name: "CDProtocol", dependencies: [.product(name: "TOMLKit", package: "TOMLKit")]),
        // Data parallelism: the Communicator protocol (pure Swift) and its OpenMPI implementation,
        // the only code that imports CMPI besides `cdtrainerd version`.
        .target(name: "CDDistributed"),
        .target(name: "CDDistributedMPI", dependencies: ["CDDistributed", "CMPI"]),
        .target(
            name: "CDTraining",
            dependencies: ["CDTensor", "CDModels", "CDImages", "CDProtocol", "CDDistributed", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: kernelFlags),
        .executableTarget(
            name: "cdtrainerd",
            dependencies: [
                "CDTensor", "CDModels", "CDTraining", "CDProtocol", "CMPI", "COpenBLAS", "CDDistributed", "CDDistributedMPI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: kernelFlags),
        // Daemon state: job store (SQLite via GRDB), blob store; never the numeric targets.
        .target(
            name: "CDServer",
            dependencies: [
                "CDProtocol",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ]),
        // Fixture lookup and parity expectations shared by the model and training tests.
        .target(name: "CDTestSupport", dependencies: ["CDTensor"], path: "Tests/CDTestSupport"),
        .testTarget(name: "CDTensorTests", dependencies: ["CDTensor"]),
        .testTarget(name: "CDModelsTests", dependencies: ["CDModels", "CDTensor", "CDTestSupport"]),
        .testTarget(name: "CDTrainingTests", dependencies: ["CDTraining", "CDModels", "CDTensor", "CDTestSupport"]),
        .testTarget(name: "CDImagesTests", dependencies: ["CDImages", "CJPEG", "CPNG"], exclude: ["Fixtures"]),
        .testTarget(name: "CDProtocolTests", dependencies: ["CDProtocol"]),
        .testTarget(
            name: "CDDistributedTests",
            dependencies: ["CDDistributed", "CDTraining", "CDProtocol", "CDModels", "CDTensor", "CDTestSupport"]),
        .testTarget(
            name: "CDServerTests",
            dependencies: [
                "CDServer", "CDProtocol", .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ]),
    ]
)
