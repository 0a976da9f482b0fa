// swift-tools-version:5.9
// PushClient: push-service's client module for iOS and macOS apps. The Swift
// sources are generated (generate.sh); PushClientFFI.xcframework is built by
// the recipe in the repository's README ("Using the client from Kotlin / Swift").
import PackageDescription

let package = Package(
    name: "PushClient",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [
        .library(name: "PushClient", targets: ["PushClient"]),
    ],
    targets: [
        .binaryTarget(name: "PushClientFFI", path: "PushClientFFI.xcframework"),
        .target(name: "PushClient", dependencies: ["PushClientFFI"], path: "Sources/PushClient"),
    ]
)
