<#
.SYNOPSIS
  Intune Win32 app uninstall command for Governor (runs as SYSTEM).
.DESCRIPTION
  Stops every user's agent and tray, then removes every installed Governor
  MSI (found by its UpgradeCode). Each user's data (%LOCALAPPDATA%\governor)
  stays unless -PurgeUserData is given. Policy values stay: remove the
  Intune policy to clear them.
#>
param([switch]$PurgeUserData)
$ErrorActionPreference = "Stop"
$UpgradeCode = "{6B1F3C2E-8D4A-4E59-9C1B-2A7E5D0F4C31}"

Get-Process -Name "governorw", "governor" -ErrorAction SilentlyContinue | Stop-Process -Force -ErrorAction SilentlyContinue

$installer = New-Object -ComObject WindowsInstaller.Installer
$products = @($installer.GetType().InvokeMember("RelatedProducts", "GetProperty", $null, $installer, @($UpgradeCode)))
$code = 0
foreach ($product in $products) {
    $process = Start-Process -FilePath "msiexec.exe" -ArgumentList @("/x", $product, "/qn", "/norestart") -Wait -PassThru
    if ($process.ExitCode -ne 0 -and $process.ExitCode -ne 3010) { $code = $process.ExitCode }
}

if ($PurgeUserData) {
    Get-ChildItem -Path "$env:SystemDrive\Users" -Directory | ForEach-Object {
        foreach ($dir in @("AppData\Local\governor", "AppData\Roaming\governor")) {
            $path = Join-Path $_.FullName $dir
            if (Test-Path $path) { Remove-Item -Recurse -Force $path; Write-Output "removed $path" }
        }
    }
}
exit $code
